//! `vigil convert FILE...`: Argo Rollouts and Flagger YAML into vigil's (see `crate::convert`).

use std::io::Read;
use std::path::PathBuf;

use crate::convert::{Source, convert, to_yaml};

/// Arguments of `vigil convert`.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// YAML files to convert (`-` reads stdin). Give a Canary together with its MetricTemplates
    /// and the Deployment it targets, a Rollout together with its templates.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Exit code when every field was mapped.
pub const EXIT_OK: i32 = 0;
/// Exit code when some field could not be mapped (the output is still written).
pub const EXIT_UNMAPPED: i32 = 1;
/// Exit code when a file could not be read or is not YAML (nothing is written).
pub const EXIT_USAGE: i32 = 2;

/// Largest file (or stdin) read, in bytes: manifests are kilobytes; the YAML parser's memory
/// grows with its input.
pub const MAX_INPUT_BYTES: u64 = 16 * 1024 * 1024;

/// Why an input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConvertCliError {
    /// The file could not be opened or read.
    #[error("read {path}: {source}")]
    ReadFile {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_INPUT_BYTES`].
    #[error("read {path}: larger than {MAX_INPUT_BYTES} bytes (MAX_INPUT_BYTES)")]
    ReadTooLarge {
        /// The file.
        path: String,
    },
    /// The file is not UTF-8 text.
    #[error("read {path}: not UTF-8 text")]
    ReadNotText {
        /// The file.
        path: String,
    },
    /// A document is not YAML.
    #[error("{path}: {source}")]
    ParseYaml {
        /// The file.
        path: String,
        /// The loader's error (document index, line and column).
        source: crate::manifest::ReadDocumentError,
    },
    /// A document holds something JSON cannot (a non-string key).
    #[error("{path}: document {index}: {reason}")]
    ParseDocument {
        /// The file.
        path: String,
        /// The document.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

fn read(path: &PathBuf) -> Result<String, ConvertCliError> {
    let name = path.display().to_string();
    let read_error = |source| ConvertCliError::ReadFile {
        path: name.clone(),
        source,
    };
    let mut bytes = Vec::new();
    if name == "-" {
        std::io::stdin()
            .take(MAX_INPUT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
    } else {
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_INPUT_BYTES + 1).read_to_end(&mut bytes))
            .map_err(read_error)?;
    }
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_INPUT_BYTES {
        return Err(ConvertCliError::ReadTooLarge { path: name });
    }
    String::from_utf8(bytes).map_err(|_| ConvertCliError::ReadNotText { path: name })
}

fn sources(path: &PathBuf) -> Result<Vec<Source>, ConvertCliError> {
    let text = read(path)?;
    let name = path.display().to_string();
    let documents =
        crate::manifest::documents(&text).map_err(|source| ConvertCliError::ParseYaml {
            path: name.clone(),
            source,
        })?;
    let mut out = Vec::new();
    for (index, document) in documents.into_iter().enumerate() {
        if document.is_null() {
            continue;
        }
        let document =
            serde_json::to_value(&document).map_err(|error| ConvertCliError::ParseDocument {
                path: name.clone(),
                index,
                reason: error.to_string(),
            })?;
        out.push(Source {
            file: name.clone(),
            index,
            document,
        });
    }
    Ok(out)
}

/// Runs `vigil convert`: vigil's YAML on stdout, one line per unmapped field on stderr.
pub fn run(args: &ConvertArgs) -> i32 {
    let mut all = Vec::new();
    for path in &args.files {
        match sources(path) {
            Ok(found) => all.extend(found),
            Err(error) => {
                eprintln!("vigil convert: {error}");
                return EXIT_USAGE;
            }
        }
    }
    let conversion = convert(&all);
    let yaml = match to_yaml(&conversion.documents) {
        Ok(yaml) => yaml,
        Err(error) => {
            eprintln!("vigil convert: {error}");
            return EXIT_USAGE;
        }
    };
    crate::cli::write_stdout(&yaml);
    for unmapped in &conversion.unmapped {
        eprintln!("{unmapped}");
    }
    let written = conversion.documents.len();
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    if conversion.unmapped.is_empty() {
        eprintln!(
            "vigil convert: {written} document{} written, every field mapped",
            plural(written)
        );
        EXIT_OK
    } else {
        let count = conversion.unmapped.len();
        eprintln!(
            "vigil convert: {written} document{} written, {count} field{} not mapped (above); run `vigil lint` on the output after fixing them",
            plural(written),
            plural(count)
        );
        EXIT_UNMAPPED
    }
}
