//! `vigil lint FILE...`: checks vigil YAML before it reaches a cluster.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::lint::{lint_file, lint_notes};

/// Arguments of `vigil lint`.
#[derive(Debug, clap::Args)]
pub struct LintArgs {
    /// YAML files to check; a folder means every `.yaml`/`.yml` file under it.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// With `--error-rate`: requests per second through the Rollouts (canary and stable
    /// together); warns about sequential gates too short to detect the margin they name at
    /// that traffic (see `vigil plan`).
    #[arg(long, requires = "error_rate")]
    pub rps: Option<f64>,
    /// With `--rps`: the stable version's error rate (e.g. 0.005).
    #[arg(long = "error-rate", requires = "rps")]
    pub error_rate: Option<f64>,
    /// With `--rps`: the stable version's share of slow requests, for latency metrics.
    #[arg(long = "slow-share", default_value_t = 0.05)]
    pub slow_share: f64,
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

/// What expanding the command line's paths found.
#[derive(Debug, Default)]
struct Expanded {
    /// Regular files to lint, in order.
    files: Vec<PathBuf>,
    /// Paths that could not be read (exit code 2).
    unreadable: usize,
    /// Folders with no YAML file under them (a problem: exit code 1).
    empty_folders: usize,
    /// Canonical folders already walked: a symlink loop is walked once.
    visited: BTreeSet<PathBuf>,
}

/// Expands a command-line path: a folder into the YAML files under it, sorted; a file is kept
/// as given. Anything that is not a regular file (a FIFO, a socket, a device) is skipped with
/// a message, never opened: reading a FIFO would block forever.
fn expand(path: &Path, found: &mut Expanded) {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(source) => {
            report(&LintError::ReadFile {
                path: path.to_path_buf(),
                source,
            });
            found.unreadable += 1;
            return;
        }
    };
    if meta.is_dir() {
        let before = found.files.len();
        walk(path, found);
        if found.files.len() == before {
            eprintln!("vigil lint: no YAML files found in {}", path.display());
            found.empty_folders += 1;
        }
    } else if meta.is_file() {
        found.files.push(path.to_path_buf());
    } else {
        eprintln!(
            "vigil lint: skip {}: not a regular file (a FIFO, socket or device)",
            path.display()
        );
        found.unreadable += 1;
    }
}

/// Adds the YAML files under `dir`, recursively, each folder once.
fn walk(dir: &Path, found: &mut Expanded) {
    let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if !found.visited.insert(canonical) {
        eprintln!(
            "vigil lint: skip {}: already walked (a symlink loop?)",
            dir.display()
        );
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(source) => {
            report(&LintError::ReadFile {
                path: dir.to_path_buf(),
                source,
            });
            found.unreadable += 1;
            return;
        }
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for entry in entries {
        let Ok(meta) = std::fs::metadata(&entry) else {
            continue; // A dangling symlink: nothing to lint.
        };
        let yaml = entry
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml");
        if meta.is_dir() {
            walk(&entry, found);
        } else if yaml && meta.is_file() {
            found.files.push(entry);
        } else if yaml {
            eprintln!(
                "vigil lint: skip {}: not a regular file (a FIFO, socket or device)",
                entry.display()
            );
        }
    }
}

/// Warnings (stderr, not problems: the exit code stays 0) for gates that cannot detect the
/// margin they name at the given traffic.
fn sensitivity_warnings(files: &[PathBuf], rps: f64, error_rate: f64, slow_share: f64) {
    let sources = match crate::platform::local::engine::Sources::load(files) {
        Ok(sources) => sources,
        Err(error) => {
            eprintln!("vigil lint: no sensitivity check: {error}");
            return;
        }
    };
    let args = super::plan::PlanArgs {
        files: files.to_vec(),
        rps,
        error_rate,
        slow_share,
    };
    match super::plan::margin_warnings(&sources, &args) {
        Ok(warnings) => {
            for warning in warnings {
                eprintln!("{warning}");
            }
        }
        Err(error) => eprintln!("vigil lint: no sensitivity check: {error}"),
    }
}

fn report(error: &LintError) {
    eprintln!("vigil lint: {error}");
}

/// Runs `vigil lint`: problems on stdout, one per line; a summary on stderr. Exit code 0 when
/// clean, 1 when any problem was found, 2 when a file could not be read.
pub fn run(args: &LintArgs) -> i32 {
    let mut found = Expanded::default();
    for path in &args.files {
        expand(path, &mut found);
    }
    let Expanded {
        files,
        mut unreadable,
        empty_folders,
        ..
    } = found;
    let mut problems = empty_folders;
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
            Ok(text) => {
                // Notes go to stderr: stdout holds problems only, one per line.
                for note in lint_notes(file, &text) {
                    eprintln!("{note}");
                }
                lint_file(file, &text)
            }
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
            crate::outln!("{problem}");
        }
    }
    let checked = files.len();
    if problems == 0
        && let (Some(rps), Some(error_rate)) = (args.rps, args.error_rate)
    {
        sensitivity_warnings(&files, rps, error_rate, args.slow_share);
    }
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
