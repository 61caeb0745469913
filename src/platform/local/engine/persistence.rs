//! What the state directory keeps: Rollouts, runs, status writes, and the process groups of a
//! running engine (killed on the next start if the engine was killed).

#[allow(clippy::wildcard_imports)]
use super::*;

/// What the state directory keeps per Rollout besides its status.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StoredRollout {
    pub(super) spec: RolloutSpec,
    pub(super) generation: i64,
    /// The pod template of every revision still around, so the stable one can be started
    /// again after a restart when the spec asks for another.
    pub(super) revisions: BTreeMap<String, PodTemplateSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StoredRun {
    pub(super) rollout: String,
    /// When the engine created the run (absent in state written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) created_at: Option<Timestamp>,
    pub(super) spec: AnalysisRunSpec,
    pub(super) status: AnalysisRunStatus,
}

impl Engine {
    pub(super) fn record_processes(&mut self) {
        let pids = self.supervisor.recorded_processes();
        if pids != self.recorded_pids {
            match self.state.save(PROCESSES_KEY, &pids) {
                Ok(()) => self.recorded_pids = pids,
                Err(error) => tracing::warn!(%error, "could not record processes"),
            }
        }
    }
}

pub(super) fn store_rollout(state: &StateDir, managed: &Managed) -> Result<(), StateError> {
    state.save(
        &format!("{}.rollout", managed.name),
        &StoredRollout {
            spec: managed.spec.clone(),
            generation: managed.generation,
            revisions: managed.revisions.clone(),
        },
    )
}

pub(super) fn save_run(state: &StateDir, name: &str, run: &RunEntry) {
    let stored = StoredRun {
        rollout: run.rollout.clone(),
        created_at: run.created_at,
        spec: run.spec.clone(),
        status: run.status.clone(),
    };
    if let Err(error) = state.save(&run_key(name), &stored) {
        tracing::error!(run = %name, %error, "could not record the analysis run");
    }
}

/// Kills the process groups a previous engine recorded (it was killed before it could stop
/// them): their revisions are started again from status.
pub(super) fn kill_leftovers(state: &StateDir) {
    let records = match state.load::<serde_json::Value>(PROCESSES_KEY) {
        Ok(json) => json.map(|json| crate::platform::local::leftovers::parse_records(&json)),
        Err(error) => {
            tracing::warn!(%error, "could not read the processes of a previous engine");
            return;
        }
    };
    // Only a PID that still has its recorded start time is signalled (issue 9, item 13).
    for record in records.unwrap_or_default() {
        crate::platform::local::leftovers::end_leftover(record);
    }
    if let Err(error) = state.save(PROCESSES_KEY, &Vec::<u32>::new()) {
        tracing::warn!(%error, "could not clear the recorded processes");
    }
}
