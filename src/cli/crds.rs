//! `vigil crds`: the CRDs as YAML, generated from the Rust types.

use std::path::PathBuf;

use crate::api::{all_crds, crd_file_name};

/// Arguments of `vigil crds`.
#[derive(Debug, clap::Args)]
pub struct CrdsArgs {
    /// Write one file per CRD (`<plural>.vigil.dev.yaml`) into this folder instead of printing.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Why the CRDs could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum CrdsError {
    /// Serialising a CRD to YAML failed.
    #[error("serialise CRD {name} to YAML: {source}")]
    SerializeCrd {
        /// The CRD's name.
        name: String,
        /// The cause.
        source: serde_norway::Error,
    },
    /// Writing a file failed.
    #[error("write {path}: {source}")]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Each CRD with its file name and YAML text, in a stable order.
pub fn render() -> Result<Vec<(String, String)>, CrdsError> {
    all_crds()
        .into_iter()
        .map(|crd| {
            let name = crd_file_name(&crd);
            serde_norway::to_string(&crd)
                .map(|yaml| (name.clone(), yaml))
                .map_err(|source| CrdsError::SerializeCrd { name, source })
        })
        .collect()
}

fn write_all(out: &std::path::Path) -> Result<(), CrdsError> {
    std::fs::create_dir_all(out).map_err(|source| CrdsError::WriteFile {
        path: out.to_path_buf(),
        source,
    })?;
    for (name, yaml) in render()? {
        let path = out.join(name);
        std::fs::write(&path, yaml).map_err(|source| CrdsError::WriteFile { path, source })?;
    }
    Ok(())
}

/// Runs `vigil crds`.
pub fn run(args: &CrdsArgs) -> i32 {
    let result = match &args.out {
        Some(out) => write_all(out),
        None => render().map(|docs| {
            let text: Vec<String> = docs.into_iter().map(|(_, yaml)| yaml).collect();
            super::write_stdout(&text.join("---\n"));
        }),
    };
    match result {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("vigil crds: {error}");
            1
        }
    }
}
