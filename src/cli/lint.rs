//! `vigil lint FILE...`: checks vigil YAML before it reaches a cluster.

use std::path::{Path, PathBuf};

use crate::lint::lint_file;

/// Arguments of `vigil lint`.
#[derive(Debug, clap::Args)]
pub struct LintArgs {
    /// YAML files to check; a folder means every `.yaml`/`.yml` file under it.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Why a file could not be linted at all (as opposed to problems found in it).
#[derive(Debug, thiserror::Error)]
pub enum LintError {
    /// A file or folder could not be read.
    #[error("read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Exit code when every file is clean.
pub const EXIT_OK: i32 = 0;
/// Exit code when any problem was found.
pub const EXIT_PROBLEMS: i32 = 1;
/// Exit code when a file could not be read (missing, unreadable).
pub const EXIT_USAGE: i32 = 2;

/// Expands folders into the YAML files under them, sorted; files are kept as given.
fn expand(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), LintError> {
    let meta = std::fs::metadata(path).map_err(|source| LintError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| LintError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            expand(&entry, out)?;
        } else if entry
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            out.push(entry);
        }
    }
    Ok(())
}

/// Runs `vigil lint`: problems on stdout, one per line; a summary on stderr. Exit code 0 when
/// clean, 1 when any problem was found, 2 when a file could not be read.
pub fn run(args: &LintArgs) -> i32 {
    let mut files = Vec::new();
    let mut unreadable = 0;
    for path in &args.files {
        if let Err(error) = expand(path, &mut files) {
            eprintln!("vigil lint: {error}");
            unreadable += 1;
        }
    }
    let mut problems = 0;
    let mut bad_files = 0;
    for file in &files {
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(source) => {
                eprintln!(
                    "vigil lint: {}",
                    LintError::ReadFile {
                        path: file.clone(),
                        source
                    }
                );
                unreadable += 1;
                continue;
            }
        };
        let found = match String::from_utf8(bytes) {
            Ok(text) => lint_file(file, &text),
            Err(_) => vec![crate::lint::LintProblem {
                file: file.display().to_string(),
                document: None,
                position: None,
                path: String::new(),
                message: "not UTF-8 text".to_owned(),
            }],
        };
        if !found.is_empty() {
            bad_files += 1;
        }
        problems += found.len();
        for problem in found {
            println!("{problem}");
        }
    }
    let checked = files.len();
    if problems == 0 {
        eprintln!(
            "vigil lint: {checked} file{} ok",
            if checked == 1 { "" } else { "s" }
        );
    } else {
        eprintln!(
            "vigil lint: {problems} problem{} in {bad_files} of {checked} file{}",
            if problems == 1 { "" } else { "s" },
            if checked == 1 { "" } else { "s" }
        );
    }
    if unreadable > 0 {
        EXIT_USAGE
    } else if problems > 0 {
        EXIT_PROBLEMS
    } else {
        EXIT_OK
    }
}
