//! Releases on this machine: each Rollout's history (`<name>.history.json`, what `vigil
//! history` prints) updated from the statuses the engine stores, and one HTML report per
//! finished release (`reports/<name>-<revision>-<attempt>.html`, see `crate::report`). Also
//! what `vigil report`, `vigil history` and `vigil local list` read from a state directory
//! without a running engine.

use std::path::{Path, PathBuf};

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::dora::{History, Outcome, ReleaseRecord, changes};
use crate::report::{ReportInput, RolloutInput, RunInput, TimelineEvent};

/// The folder of the state directory that holds the reports.
pub const REPORTS_DIR: &str = "reports";

fn history_key(name: &str) -> String {
    format!("{name}.history")
}

impl Engine {
    /// Updates the history of `managed` from `before` to its status just stored at `now`, and
    /// writes the report of a release that ended.
    pub(super) fn record_release(&self, managed: &Managed, before: &RolloutStatus, now: Timestamp) {
        let found = changes(before, &managed.status, now);
        if found.is_empty() {
            return;
        }
        let key = history_key(&managed.name);
        let mut history = match self.state.load::<History>(&key) {
            Ok(history) => history.unwrap_or_default(),
            Err(error) => {
                tracing::warn!(rollout = %managed.name, %error, "could not read the release history; starting a new one");
                History::default()
            }
        };
        history.apply(&found, now);
        if let Some(ended) = history.releases.last_mut().filter(|r| {
            matches!(r.outcome, Outcome::Promoted | Outcome::RolledBack) && r.ended_at == Some(now)
        }) {
            match write_release_report(self.state.path(), &managed.name, ended, now) {
                Ok(path) => {
                    tracing::info!(rollout = %managed.name, report = %path.display(), "release report written");
                    ended.report = Some(path.display().to_string());
                }
                Err(error) => {
                    tracing::warn!(rollout = %managed.name, %error, "could not write the release report");
                }
            }
        }
        if let Err(error) = self.state.save(&key, &history) {
            tracing::warn!(rollout = %managed.name, %error, "could not record the release history");
        }
    }
}

/// Why reading a state directory for a report, a history or a list failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadStateError {
    /// The directory does not exist.
    #[error("no state directory at {0} (pass the --state-dir of `vigil run`)")]
    FindStateDir(PathBuf),
    /// A file could not be read or parsed.
    #[error(transparent)]
    State(#[from] StateError),
    /// Neither a Rollout nor an AnalysisRun has this name.
    #[error("no Rollout or AnalysisRun named {name:?} in {dir}")]
    FindObject {
        /// The name asked for.
        name: String,
        /// The state directory.
        dir: PathBuf,
    },
    /// The report could not be drawn.
    #[error(transparent)]
    Render(#[from] crate::report::ReportError),
    /// The report could not be written.
    #[error("failed to write the report {path}: {source}")]
    WriteReport {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn open_existing(dir: &Path) -> Result<StateDir, ReadStateError> {
    if !dir.is_dir() {
        return Err(ReadStateError::FindStateDir(dir.to_owned()));
    }
    Ok(StateDir::open(dir)?)
}

/// The Rollouts recorded in a state directory, with their status, sorted by name.
pub fn list_rollouts(dir: &Path) -> Result<Vec<(String, RolloutStatus)>, ReadStateError> {
    let state = open_existing(dir)?;
    let mut found = Vec::new();
    for key in state.list()? {
        let Some(name) = key.strip_suffix(".rollout") else {
            continue;
        };
        let status = state
            .load::<RolloutStatus>(&format!("{name}.status"))?
            .unwrap_or_default();
        found.push((name.to_owned(), status));
    }
    Ok(found)
}

/// The release history of the Rollout `name` (empty when it has none yet).
pub fn read_history(dir: &Path, name: &str) -> Result<History, ReadStateError> {
    let state = open_existing(dir)?;
    if state
        .load::<StoredRollout>(&format!("{name}.rollout"))?
        .is_none()
    {
        return Err(ReadStateError::FindObject {
            name: name.to_owned(),
            dir: dir.to_owned(),
        });
    }
    Ok(state
        .load::<History>(&history_key(name))?
        .unwrap_or_default())
}

/// What a report on `name` (a Rollout, else an AnalysisRun) draws, from the state directory.
/// For a Rollout, `release` narrows the runs and events to one release.
pub fn report_input(
    dir: &Path,
    name: &str,
    release: Option<&ReleaseRecord>,
    now: Timestamp,
) -> Result<ReportInput, ReadStateError> {
    let state = open_existing(dir)?;
    if let Some(stored) = state.load::<StoredRollout>(&format!("{name}.rollout"))? {
        let status = state
            .load::<RolloutStatus>(&format!("{name}.status"))?
            .unwrap_or_default();
        let events = state
            .load::<Vec<EventRecord>>(&format!("{name}.events"))?
            .unwrap_or_default();
        let latest = release.cloned().or_else(|| {
            state
                .load::<History>(&history_key(name))
                .ok()
                .flatten()
                .and_then(|h| h.releases.last().cloned())
        });
        let runs = runs_of(&state, name, latest.as_ref())?;
        let events = events
            .into_iter()
            .filter(|e| latest.as_ref().is_none_or(|r| e.time >= r.started_at))
            .map(timeline_event)
            .collect();
        return Ok(ReportInput {
            rollout: Some(RolloutInput {
                name: name.to_owned(),
                spec: stored.spec,
                status,
            }),
            events,
            runs,
            generated_at: now,
        });
    }
    if let Some(run) = state.load::<StoredRun>(&run_key(name))? {
        return Ok(ReportInput {
            rollout: None,
            events: Vec::new(),
            runs: vec![RunInput {
                name: name.to_owned(),
                spec: Some(run.spec),
                status: run.status,
            }],
            generated_at: now,
        });
    }
    Err(ReadStateError::FindObject {
        name: name.to_owned(),
        dir: dir.to_owned(),
    })
}

fn timeline_event(event: EventRecord) -> TimelineEvent {
    TimelineEvent {
        time: event.time,
        type_: event.type_,
        reason: event.reason,
        message: event.message,
    }
}

/// The runs of the Rollout `name`, oldest first; of one release when its runs can be told
/// apart by name (`<rollout>-<revision>-<attempt>-…`).
fn runs_of(
    state: &StateDir,
    name: &str,
    release: Option<&ReleaseRecord>,
) -> Result<Vec<RunInput>, ReadStateError> {
    let mut runs = Vec::new();
    for key in state.list()? {
        let Some(run_name) = key.strip_suffix(".run") else {
            continue;
        };
        let Some(stored) = state.load::<StoredRun>(&key)? else {
            continue;
        };
        if stored.rollout != name {
            continue;
        }
        runs.push(RunInput {
            name: run_name.to_owned(),
            spec: Some(stored.spec),
            status: stored.status,
        });
    }
    if let Some(release) = release {
        let prefix = format!("{name}-{}-{}-", release.revision, release.attempt);
        if runs.iter().any(|r| r.name.starts_with(&prefix)) {
            runs.retain(|r| r.name.starts_with(&prefix));
        }
    }
    runs.sort_by_key(|r| r.status.started_at.as_ref().map(|t| t.0));
    Ok(runs)
}

/// Writes the report of `release` of the Rollout `name` into the state directory's
/// [`REPORTS_DIR`]; returns its path.
pub fn write_release_report(
    dir: &Path,
    name: &str,
    release: &ReleaseRecord,
    now: Timestamp,
) -> Result<PathBuf, ReadStateError> {
    let input = report_input(dir, name, Some(release), now)?;
    let html = crate::report::render(&input)?;
    let folder = dir.join(REPORTS_DIR);
    let path = folder.join(format!(
        "{name}-{}-{}.html",
        release.revision, release.attempt
    ));
    std::fs::create_dir_all(&folder)
        .and_then(|()| std::fs::write(&path, html))
        .map_err(|source| ReadStateError::WriteReport {
            path: path.clone(),
            source,
        })?;
    Ok(path)
}
