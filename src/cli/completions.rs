//! `vigil completions bash|zsh|fish`: the shell completion script, on stdout.

use clap::CommandFactory as _;

/// The shells completions are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// Bash: `source <(vigil completions bash)`.
    Bash,
    /// Zsh: `vigil completions zsh > "${fpath[1]}/_vigil"`.
    Zsh,
    /// Fish: `vigil completions fish > ~/.config/fish/completions/vigil.fish`.
    Fish,
}

/// Arguments of `vigil completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// Which shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut command = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(generator, &mut command, "vigil", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Prints the script; always 0.
pub fn run(args: &CompletionsArgs) -> i32 {
    super::write_stdout(&script(args.shell));
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_script_completes_the_verbs_and_their_flags() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let text = script(shell);
            for word in [
                "promote",
                "retry",
                "--analysis",
                "--state-dir",
                "completions",
            ] {
                assert!(text.contains(word), "{shell:?}: {word} missing");
            }
        }
        assert!(script(Shell::Bash).contains("complete -F"));
        assert!(script(Shell::Zsh).starts_with("#compdef vigil"));
        assert!(script(Shell::Fish).contains("complete -c vigil"));
    }
}
