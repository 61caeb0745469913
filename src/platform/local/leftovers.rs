//! The processes a previous engine left behind (it was killed before it could stop them), and
//! how the next engine ends them without ever signalling a stranger.
//!
//! The engine records each replica's PID with its start time (`/proc/PID/stat` field 22, clock
//! ticks since boot) in `processes.json`. At the next start, a record is acted on only if that
//! PID still runs and started at the recorded time: after a reboot or a long pause the PID may
//! belong to another program by now. PIDs `<= 1` are never signalled (`kill(-1)` would reach
//! every process of the user), and records from an older vigil that hold a bare PID are only
//! logged. A matching process leads its own group (the supervisor starts each replica so), and
//! the whole group gets SIGKILL.

use serde::{Deserialize, Serialize};

/// A process the engine started, as recorded in `processes.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedProcess {
    /// The PID, which is also its process group.
    pub pid: u32,
    /// When it started: `/proc/PID/stat` field 22 (clock ticks since boot).
    pub start_time: u64,
}

/// An entry of `processes.json` as found on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ProcessRecord {
    /// A PID with its start time.
    Verified(RecordedProcess),
    /// A bare PID, as older engines wrote (or any other number): never signalled.
    PidOnly(i64),
}

/// What [`end_leftover`] did with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftoverOutcome {
    /// The process still ran with the recorded start time; its group got SIGKILL.
    Killed,
    /// No such process any more.
    Gone,
    /// The PID now belongs to a process started at another time: not signalled.
    Reused,
    /// PID 0, 1 or out of range: never signalled.
    Refused,
    /// No start time recorded: not signalled.
    Unverifiable,
}

/// The start time of `stat`, the text of `/proc/PID/stat`: field 22, counted after the
/// command name, which is in parentheses and may itself hold spaces and parentheses.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    // Fields from 3 (state) on; starttime is field 22.
    after_name.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// The start time of the running process `pid`, if there is one.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Ends one leftover process group if, and only if, the record still describes it.
pub fn end_leftover(record: ProcessRecord) -> LeftoverOutcome {
    let recorded = match record {
        ProcessRecord::PidOnly(pid) => {
            tracing::warn!(
                pid,
                "a previous engine recorded a process without its start time; not signalling it (end it yourself if it is still vigil's)"
            );
            return LeftoverOutcome::Unverifiable;
        }
        ProcessRecord::Verified(recorded) => recorded,
    };
    let pid = recorded.pid;
    let Some(group) = i32::try_from(pid)
        .ok()
        .filter(|raw| *raw > 1)
        .and_then(rustix::process::Pid::from_raw)
    else {
        tracing::warn!(
            pid,
            "refusing to signal a recorded PID <= 1 or out of range"
        );
        return LeftoverOutcome::Refused;
    };
    match process_start_time(pid) {
        None => LeftoverOutcome::Gone,
        Some(now) if now != recorded.start_time => {
            tracing::info!(
                pid,
                recorded_start = recorded.start_time,
                current_start = now,
                "a recorded PID now belongs to another process; not signalling it"
            );
            LeftoverOutcome::Reused
        }
        Some(_) => {
            // ESRCH here means it exited since the check: harmless.
            match rustix::process::kill_process_group(group, rustix::process::Signal::KILL) {
                Ok(()) => {
                    tracing::info!(pid, "killed a process group left by a previous engine");
                    LeftoverOutcome::Killed
                }
                Err(_) => LeftoverOutcome::Gone,
            }
        }
    }
}

/// Reads `processes.json` as found on disk; an unreadable file is logged and ignored.
pub fn parse_records(json: &serde_json::Value) -> Vec<ProcessRecord> {
    match json {
        serde_json::Value::Array(entries) => entries
            .iter()
            .filter_map(|entry| match ProcessRecord::deserialize(entry) {
                Ok(record) => Some(record),
                Err(error) => {
                    tracing::warn!(%error, %entry, "ignoring an unreadable process record");
                    None
                }
            })
            .collect(),
        other => {
            tracing::warn!(found = %other, "processes.json is not a list; ignoring it");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_parentheses_in_the_name() {
        let stat = "4242 (my (odd) app) S 1 4242 4242 0 -1 4194304 120 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("4242 (cut) S 1"), None);
        assert_eq!(parse_start_time("no parenthesis"), None);
    }

    #[test]
    fn own_start_time_is_readable() {
        assert!(process_start_time(std::process::id()).is_some());
    }

    #[test]
    fn old_and_new_records_both_parse() {
        let json = serde_json::json!([42, {"pid": 7, "startTime": 9}, -1, "junk"]);
        assert_eq!(
            parse_records(&json),
            vec![
                ProcessRecord::PidOnly(42),
                ProcessRecord::Verified(RecordedProcess {
                    pid: 7,
                    start_time: 9
                }),
                ProcessRecord::PidOnly(-1),
            ]
        );
    }
}
