//! The local platform's state directory: each Rollout's status (and its last applied spec) as
//! one JSON file per key, e.g. `shop.status.json` and `shop.spec.json`.
//!
//! Writes are atomic: the JSON goes to a temp file in the same directory (`.<key>.json.<pid>.
//! <n>.tmp`), which is fsynced, renamed over the target, and then the directory is fsynced so
//! the rename itself survives a power cut. A reader sees the old file or the new one, never a
//! torn one; a crash before the rename leaves only a stray temp file, which [`StateDir::load`]
//! and [`StateDir::list`] ignore and [`StateDir::open`] removes.
//!
//! The calls are blocking (small files; from async code wrap them in `spawn_blocking` when
//! latency matters).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a state operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The directory could not be created or opened.
    #[error("failed to open the state directory {path}: {source}")]
    OpenStateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key cannot name a file.
    #[error(
        "invalid state key {key:?}: use letters, digits, '.', '-' and '_', not starting with '.'"
    )]
    InvalidKey {
        /// The key.
        key: String,
    },
    /// Serialising the value failed.
    #[error("failed to serialise state {key}: {source}")]
    SerializeState {
        /// The key.
        key: String,
        /// The cause.
        source: serde_json::Error,
    },
    /// Writing, syncing or renaming failed.
    #[error("failed to save state to {path}: {source}")]
    SaveState {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading failed.
    #[error("failed to load state from {path}: {source}")]
    LoadState {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the expected type.
    #[error("failed to parse state in {path}: {source}")]
    ParseState {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

const EXTENSION: &str = ".json";
const TEMP_SUFFIX: &str = ".tmp";

/// A directory of JSON state files written atomically.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    next_temp: AtomicU64,
}

fn check_key(key: &str) -> Result<(), StateError> {
    let valid = !key.is_empty()
        && !key.starts_with('.')
        && key.len() <= 200
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if valid {
        Ok(())
    } else {
        Err(StateError::InvalidKey {
            key: key.to_owned(),
        })
    }
}

impl StateDir {
    /// Opens (creating it if needed) the state directory at `path`, and removes temp files that
    /// a crash left behind.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StateError> {
        let path = path.into();
        let open_error = |source| StateError::OpenStateDir {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&path).map_err(open_error)?;
        for entry in fs::read_dir(&path).map_err(open_error)? {
            let entry = entry.map_err(open_error)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
                tracing::info!(file = %entry.path().display(), "removing a temp file left by an interrupted write");
                // Best effort: a leftover temp file is ignored by every read anyway.
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            path,
            next_temp: AtomicU64::new(0),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self, key: &str) -> PathBuf {
        self.path.join(format!("{key}{EXTENSION}"))
    }

    /// Writes `value` as JSON under `key`, atomically and durably.
    pub fn save<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), StateError> {
        check_key(key)?;
        let json =
            serde_json::to_vec_pretty(value).map_err(|source| StateError::SerializeState {
                key: key.to_owned(),
                source,
            })?;
        let target = self.file(key);
        // Unique per process and call, so concurrent writers never share a temp file.
        let temp = self.path.join(format!(
            ".{key}{EXTENSION}.{}.{}{TEMP_SUFFIX}",
            std::process::id(),
            self.next_temp.fetch_add(1, Ordering::Relaxed)
        ));
        let result = write_synced(&temp, &json)
            .map_err(|source| StateError::SaveState {
                path: temp.clone(),
                source,
            })
            .and_then(|()| {
                fs::rename(&temp, &target).map_err(|source| StateError::SaveState {
                    path: target.clone(),
                    source,
                })
            });
        if result.is_err() {
            let _ = fs::remove_file(&temp);
            return result;
        }
        // The rename is durable only once the directory entry is on disk.
        File::open(&self.path)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| StateError::SaveState {
                path: self.path.clone(),
                source,
            })
    }

    /// Reads the value under `key`; `None` when there is none.
    pub fn load<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StateError> {
        check_key(key)?;
        let path = self.file(key);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::LoadState { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StateError::ParseState { path, source })
    }

    /// Removes the value under `key`; true when there was one.
    pub fn remove(&self, key: &str) -> Result<bool, StateError> {
        check_key(key)?;
        let path = self.file(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StateError::SaveState { path, source }),
        }
    }

    /// The keys present, sorted; temp files and other files are not listed.
    pub fn list(&self) -> Result<Vec<String>, StateError> {
        let list_error = |source| StateError::LoadState {
            path: self.path.clone(),
            source,
        };
        let mut keys = Vec::new();
        for entry in fs::read_dir(&self.path).map_err(list_error)? {
            let entry = entry.map_err(list_error)?;
            let name = entry.file_name();
            let Some(key) = name.to_str().and_then(|n| n.strip_suffix(EXTENSION)) else {
                continue;
            };
            if check_key(key).is_ok() {
                keys.push(key.to_owned());
            }
        }
        keys.sort();
        Ok(keys)
    }
}

/// Writes `bytes` to `dir/name` atomically, readable and writable by the owner only (mode
/// 0600 from the moment the file exists: a temp file created with that mode is renamed over the
/// target). For secrets such as the admin token.
pub fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let target = dir.join(name);
    let temp = dir.join(format!(
        ".{name}.{}.{}{TEMP_SUFFIX}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temp, &target));
    if let Err(error) = written {
        let _ = fs::remove_file(&temp);
        return Err(error);
    }
    Ok(target)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rollout::{RolloutPhase, RolloutStatus};

    #[test]
    fn round_trips_a_rollout_status_and_lists_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StateDir::open(dir.path().join("state")).expect("open");
        assert_eq!(
            state.load::<RolloutStatus>("shop.status").expect("load"),
            None
        );
        let status = RolloutStatus {
            phase: Some(RolloutPhase::Paused),
            canary_weight: 20,
            message: Some("waiting".into()),
            ..RolloutStatus::default()
        };
        state.save("shop.status", &status).expect("save");
        state
            .save("shop.spec", &serde_json::json!({"replicas": 2}))
            .expect("save");
        assert_eq!(
            state.load("shop.status").expect("load"),
            Some(status.clone())
        );
        // Overwrite.
        let healthy = RolloutStatus {
            phase: Some(RolloutPhase::Healthy),
            ..status
        };
        state.save("shop.status", &healthy).expect("save");
        assert_eq!(state.load("shop.status").expect("load"), Some(healthy));
        assert_eq!(
            state.list().expect("list"),
            vec!["shop.spec", "shop.status"]
        );
        assert!(state.remove("shop.spec").expect("remove"));
        assert!(!state.remove("shop.spec").expect("remove again"));
        assert_eq!(state.list().expect("list"), vec!["shop.status"]);
        // No temp file is left after successful writes.
        let names: Vec<_> = fs::read_dir(state.path())
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_crash_before_the_rename_never_leaves_a_torn_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StateDir::open(dir.path()).expect("open");
        state
            .save("shop.status", &serde_json::json!({"canaryWeight": 20}))
            .expect("save");
        // A write interrupted before its rename: a torn temp file next to the good one, and
        // one for a key that was never saved.
        fs::write(
            dir.path().join(".shop.status.json.999.0.tmp"),
            br#"{"canaryWeigh"#,
        )
        .expect("write stray");
        fs::write(dir.path().join(".new.status.json.999.1.tmp"), b"{").expect("write stray");
        let value: serde_json::Value = state.load("shop.status").expect("load").expect("present");
        assert_eq!(value, serde_json::json!({"canaryWeight": 20}));
        assert_eq!(
            state.load::<serde_json::Value>("new.status").expect("load"),
            None
        );
        assert_eq!(state.list().expect("list"), vec!["shop.status"]);
        // Reopening (a restart) clears the leftovers.
        drop(state);
        let state = StateDir::open(dir.path()).expect("reopen");
        assert_eq!(state.list().expect("list"), vec!["shop.status"]);
        assert_eq!(fs::read_dir(dir.path()).expect("read dir").count(), 1);
    }

    #[test]
    fn rejects_keys_that_escape_or_hide() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StateDir::open(dir.path()).expect("open");
        for key in ["", "../x", "a/b", ".hidden", "a b"] {
            let err = state.save(key, &1).expect_err(key);
            assert!(matches!(err, StateError::InvalidKey { .. }), "{key}: {err}");
        }
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StateDir::open(dir.path()).expect("open");
        fs::write(dir.path().join("shop.status.json"), b"not json").expect("write");
        let err = state
            .load::<RolloutStatus>("shop.status")
            .expect_err("corrupt");
        assert!(err.to_string().contains("shop.status.json"), "{err}");
    }
}
