//! The handle API: what `GET /rollouts/NAME` shows, and the commands a handle sends the loop.

#[allow(clippy::wildcard_imports)]
use super::*;

/// An event recorded on a Rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    /// When.
    pub time: Timestamp,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// CamelCase reason.
    pub reason: String,
    /// What happened.
    pub message: String,
}

/// An AnalysisRun as shown by `GET /rollouts/NAME`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    /// The run's name.
    pub name: String,
    /// Its status.
    pub status: AnalysisRunStatus,
}

/// What `GET /rollouts/NAME` returns: the status and what the engine sees around it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    /// The Rollout's name.
    pub name: String,
    /// Bumped at every new spec.
    pub generation: i64,
    /// The revision the spec asks for.
    pub desired_revision: String,
    /// The status, as recorded.
    pub status: RolloutStatus,
    /// The proxy's routing, read back.
    pub routing: RoutingState,
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// Where the proxy's `/metrics` is served.
    pub metrics_listen: SocketAddr,
    /// The Rollout's AnalysisRuns, oldest first.
    pub analysis_runs: Vec<RunView>,
    /// The latest events, oldest first.
    pub events: Vec<EventRecord>,
}

#[derive(Debug)]
pub(super) enum Command {
    Apply {
        sources: Sources,
        reply: oneshot::Sender<Result<Vec<String>, EngineError>>,
    },
    Request {
        name: String,
        request: UserRequest,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A cloneable handle to a running engine.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) views: Arc<Mutex<BTreeMap<String, RolloutView>>>,
}

impl EngineHandle {
    /// The Rollout as last recorded.
    pub fn get(&self, name: &str) -> Option<RolloutView> {
        self.views
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Names of the Rollouts the engine runs.
    pub fn names(&self) -> Vec<String> {
        self.views
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Applies new Rollouts and templates (a new template starts a new rollout); returns the
    /// names of the Rollouts applied.
    pub async fn apply(&self, sources: Sources) -> Result<Vec<String>, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Apply { sources, reply })
            .await
            .map_err(|_| EngineError::ReachEngine)?;
        answer.await.map_err(|_| EngineError::ReachEngine)?
    }

    /// Records a user request on a Rollout.
    pub async fn request(&self, name: &str, request: UserRequest) -> Result<(), EngineError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Request {
                name: name.to_owned(),
                request,
                reply,
            })
            .await
            .map_err(|_| EngineError::ReachEngine)?;
        answer.await.map_err(|_| EngineError::ReachEngine)?
    }

    /// Stops every process and proxy and returns once they are gone.
    pub async fn shutdown(&self) {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { reply })
            .await
            .is_ok()
        {
            let _ = answer.await;
        }
    }
}

impl Engine {
    pub(super) fn publish(&self) {
        let views: BTreeMap<String, RolloutView> = self
            .rollouts
            .values()
            .map(|managed| {
                let analysis_runs = self
                    .runs
                    .iter()
                    .filter(|(_, run)| run.rollout == managed.name)
                    .map(|(name, run)| RunView {
                        name: name.clone(),
                        status: run.status.clone(),
                    })
                    .collect();
                let view = RolloutView {
                    name: managed.name.clone(),
                    generation: managed.generation,
                    desired_revision: desired_revision(&managed.spec, None),
                    status: managed.status.clone(),
                    routing: managed.proxy.current(),
                    listen: managed.listen,
                    metrics_listen: managed.proxy.metrics_addr(),
                    analysis_runs,
                    events: managed.events.clone(),
                };
                (managed.name.clone(), view)
            })
            .collect();
        *self.views.lock().unwrap_or_else(PoisonError::into_inner) = views;
    }
}
