//! The engine as a [`Platform`] for the shared loop: observe (processes, the proxy's routing,
//! runs, and the dereference step: templates from the loaded ones, arguments resolved),
//! execute one effect, record the status.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::notify::{RolloutRef, Transition};
use crate::platform::local::jobs::LocalJobs;

/// Why an effect could not be carried out.
#[derive(Debug, thiserror::Error)]
pub(super) enum ActError {
    /// Starting, scaling or stopping processes failed.
    #[error("{0}")]
    Process(SupervisorError),
    /// The proxy refused the routing.
    #[error("{0}")]
    Route(ProxyError),
    /// The state directory failed.
    #[error("{0}")]
    Record(StateError),
    /// A revision must be started but its pod template is not known.
    #[error("failed to start revision {revision}: its pod template is not known any more")]
    FindTemplate { revision: String },
}

/// One Rollout of the engine as a [`Platform`] for the shared [`reconcile_once`].
pub(super) struct LocalRollout<'e> {
    pub(super) engine: &'e mut Engine,
    pub(super) managed: &'e mut Managed,
    pub(super) now: Timestamp,
}

impl Platform for LocalRollout<'_> {
    type Error = ActError;
    type Recorded = ();

    async fn observe(&mut self) -> Result<Observed, ActError> {
        Ok(Observed {
            spec: local_spec(&self.managed.spec),
            status: self.managed.status.clone(),
            observation: self.engine.observe(self.managed),
        })
    }

    async fn execute(&mut self, effect: &Effect) -> Result<bool, ActError> {
        self.engine.execute(self.managed, effect, self.now).await?;
        Ok(!matches!(effect, Effect::Event { .. }))
    }

    fn call_webhooks(&mut self, calls: &[WebhookCall]) {
        self.engine.webhooks.call(&self.managed.name, None, calls);
    }

    async fn record(&mut self, _: &RolloutStatus, decision: &Decision) -> Result<(), ActError> {
        let mut status = decision.status.clone();
        self.engine.explain_revisions(self.managed, &mut status);
        if status == self.managed.status {
            return Ok(());
        }
        log_transition(&self.managed.name, &self.managed.status, &status);
        let before = std::mem::replace(&mut self.managed.status, status);
        self.engine
            .state
            .save(
                &format!("{}.status", self.managed.name),
                &self.managed.status,
            )
            .map_err(ActError::Record)?;
        self.engine.record_release(self.managed, &before, self.now);
        Ok(())
    }

    fn stored((): &()) -> bool {
        true
    }

    fn notify(&mut self, transitions: &[Transition]) {
        let rollout = RolloutRef {
            namespace: None,
            name: &self.managed.name,
        };
        let annotations = &self.managed.annotations;
        self.engine.config.notifier.notify(
            rollout,
            annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            transitions,
        );
    }
}

/// The spec as the local platform reads it: the proxy is both the stable and the canary
/// service (it routes by revision), so both are always "configured", whatever the spec names.
pub(super) fn local_spec(spec: &RolloutSpec) -> RolloutSpec {
    let mut spec = spec.clone();
    // Blue-green: the proxy's listener is the active service, its preview listener the
    // preview service.
    if let Some(bg) = &mut spec.strategy.blue_green {
        bg.active_service.get_or_insert_with(|| "active".to_owned());
        bg.preview_service
            .get_or_insert_with(|| "preview".to_owned());
        return spec;
    }
    let canary = &mut spec.strategy.canary;
    canary
        .stable_service
        .get_or_insert_with(|| "stable".to_owned());
    canary
        .canary_service
        .get_or_insert_with(|| "canary".to_owned());
    spec
}

/// Where the engine's note about processes starts in a message.
const PROCESS_NOTE: &str = "; processes: ";

/// `message` with the note about processes in place of the one a previous tick appended (a
/// message the state machine keeps, as after an abort, would otherwise grow by one note per
/// tick); without a note, the old one is removed.
pub(super) fn with_process_note(message: Option<String>, note: Option<&str>) -> Option<String> {
    let base = message.map(|message| match message.find(PROCESS_NOTE) {
        Some(at) => message[..at].to_owned(),
        None => message,
    });
    match (base, note) {
        (Some(base), Some(note)) if !base.is_empty() => Some(format!("{base}{PROCESS_NOTE}{note}")),
        (_, Some(note)) => Some(format!("processes: {note}")),
        (base, None) => base,
    }
}

impl Engine {
    /// Appends to the message why a revision's processes are not ready (a command that does
    /// not exist, a crash), which the state machine cannot know.
    pub(super) fn explain_revisions(&self, managed: &Managed, status: &mut RolloutStatus) {
        let processes = self.supervisor.status();
        let mut notes = Vec::new();
        for revision in [&status.canary_revision, &status.stable_revision]
            .into_iter()
            .flatten()
        {
            let Some(seen) = processes.get(&supervisor_key(&managed.name, revision)) else {
                continue;
            };
            if seen.ready < seen.desired
                && let Some(error) = &seen.last_error
            {
                notes.push(format!(
                    "revision {revision}: {}/{} ready: {error}",
                    seen.ready, seen.desired
                ));
            }
        }
        let note = (!notes.is_empty()).then(|| notes.join("; "));
        status.message = with_process_note(status.message.take(), note.as_deref());
    }

    pub(super) fn observe(&self, managed: &Managed) -> Observation {
        let prefix = format!("{}-", managed.name);
        let now = std::time::Instant::now();
        let revisions = self
            .supervisor
            .status()
            .into_values()
            .filter_map(|seen| {
                let revision = seen.revision.strip_prefix(&prefix)?.to_owned();
                // As a ReplicaSet's availableReplicas: with minReadySeconds a process counts
                // once it has been ready that long (the proxy routes to it from the start).
                let min_ready = managed
                    .revision_settings
                    .get(&revision)
                    .map_or(0, |settings| settings.min_ready_seconds);
                let min_ready =
                    std::time::Duration::from_secs(u64::try_from(min_ready).unwrap_or(0));
                Some(RevisionObservation {
                    created_at: managed.created_at.get(&revision).copied(),
                    ready_replicas: seen.available(min_ready, now) as i32,
                    revision,
                    replicas: seen.desired as i32,
                })
            })
            .collect();
        let routing = managed.proxy.current();
        let own_runs = || {
            self.runs
                .iter()
                .filter(|(_, run)| run.rollout == managed.name)
        };
        let analysis_runs = own_runs()
            .map(|(name, run)| AnalysisRunSummary::of(name, &run.status))
            .collect();
        let analysis_run_created_at = own_runs()
            .filter_map(|(name, run)| {
                let started = run.status.started_at.as_ref().map(|t| t.0);
                Some((name.clone(), run.created_at.or(started)?))
            })
            .collect();
        let mut spec_problems = self.analysis_problems(&managed.name, &managed.spec);
        if managed.spec.workload_ref.is_some() {
            spec_problems.push(Problem {
                path: "spec.workloadRef".to_owned(),
                message: "vigil run starts local processes and has no Deployments to adopt: set spec.template (vigil controller adopts Deployments)".to_owned(),
            });
        }
        Observation {
            rollout_name: managed.name.clone(),
            generation: Some(managed.generation),
            desired_revision: desired_revision(&managed.spec, None),
            revisions,
            router_canary_weight: Some(i32::from(routing.canary_weight)),
            router_baseline_weight: Some(if routing.baseline.is_some() {
                i32::from(routing.baseline_weight)
            } else {
                0
            }),
            router_managed_routes: Some(routing.routes.clone()),
            services: ServiceSelection {
                stable: routing.stable.map(|b| b.revision),
                canary: routing.canary.map(|b| b.revision),
                baseline: None,
            },
            analysis_runs,
            analysis_run_created_at,
            spec_problems,
            workload: None,
            webhook_answers: self.webhooks.answers(&managed.name),
            revision_settings: managed.revision_settings.clone(),
        }
    }

    /// What would keep an analysis of `spec` from starting, found before any traffic moves:
    /// a template not given to `vigil run`, or templates and arguments that do not make a run
    /// (an undeclared or unresolvable argument, metrics that clash).
    pub(super) fn analysis_problems(&self, rollout: &str, spec: &RolloutSpec) -> Vec<Problem> {
        let mut problems = Vec::new();
        for analysis in crate::rollout::declared_analyses(spec) {
            let missing = analysis.missing_templates(
                |t| self.templates.contains_key(&t.template_name),
                |t| {
                    format!(
                        "AnalysisTemplate {:?} was not given to vigil run (pass its file too)",
                        t.template_name
                    )
                },
            );
            if !missing.is_empty() {
                problems.extend(missing);
                continue;
            }
            let names: Vec<String> = analysis
                .templates
                .iter()
                .map(|t| t.template_name.clone())
                .collect();
            let found: Vec<(String, AnalysisTemplateSpec)> = names
                .iter()
                .filter_map(|n| Some((n.clone(), self.templates.get(n)?.clone())))
                .collect();
            let unused =
                crate::rollout::baseline::unused_baseline_problems(spec, &analysis, &found);
            if !unused.is_empty() {
                problems.extend(unused);
                continue;
            }
            // The revisions are not known yet; any value stands in for them here.
            if let Err(message) = self.run_spec(rollout, &names, analysis.args, "stable", "canary")
            {
                problems.push(Problem {
                    path: analysis.kind.path(),
                    message,
                });
            }
        }
        problems
    }

    /// The spec of a run of `templates` with `args` for the given revisions.
    pub(super) fn run_spec(
        &self,
        rollout: &str,
        templates: &[String],
        args: &[Argument],
        stable: &str,
        canary: &str,
    ) -> Result<AnalysisRunSpec, String> {
        let mut chosen = Vec::new();
        for name in templates {
            match self.templates.get(name) {
                Some(template) => chosen.push((name.clone(), template.clone())),
                None => {
                    return Err(format!(
                        "AnalysisTemplate {name:?} was not given to vigil run"
                    ));
                }
            }
        }
        let analysis = Dereferenced {
            templates: chosen,
            args: args.to_vec(),
        };
        // There is no namespace locally: a template's own default applies (the shipped ones use
        // `""`, which matches the proxy's series, exported without a namespace label).
        let run_for = RunFor {
            rollout,
            namespace: None,
            stable,
            canary,
        };
        dereference::run_spec(&analysis, run_for, SecretArgs::Unsupported)
            .map_err(|error| error.to_string())
    }

    pub(super) async fn execute(
        &mut self,
        managed: &mut Managed,
        effect: &Effect,
        now: Timestamp,
    ) -> Result<(), ActError> {
        match effect {
            Effect::ScaleRevision { revision, replicas } => {
                self.scale(managed, revision, *replicas, now).await
            }
            Effect::SetWeight { canary_weight } => {
                managed.weight = (*canary_weight).clamp(0, 100) as u8;
                self.apply_routing(managed).map_err(ActError::Route)
            }
            Effect::SetBaselineWeight { baseline_weight } => {
                managed.baseline_weight = (*baseline_weight).clamp(0, 100) as u8;
                self.apply_routing(managed).map_err(ActError::Route)
            }
            // Only with `canary.baseline.service`, which validation allows with the Gateway
            // API alone: the proxy routes to the baseline's processes itself.
            Effect::PointBaselineService { .. } => Ok(()),
            Effect::PointServices { stable, canary } => {
                if let Some(stable) = stable {
                    managed.stable_service = Some(stable.clone());
                }
                if let Some(canary) = canary {
                    managed.canary_service = Some(canary.clone());
                }
                self.apply_routing(managed).map_err(ActError::Route)
            }
            Effect::CreateAnalysisRun {
                name,
                kind,
                templates,
                args,
                stable_revision,
                canary_revision,
            } => {
                if !self.runs.contains_key(name) {
                    let refs: Vec<String> =
                        templates.iter().map(|t| t.template_name.clone()).collect();
                    let mut run = self.create_run(
                        &managed.name,
                        &refs,
                        args,
                        stable_revision,
                        canary_revision,
                        now,
                    );
                    run.spec.background = *kind == crate::rollout::AnalysisKind::Background;
                    run.jobs = LocalJobs::new(name);
                    tracing::info!(rollout = %managed.name, run = %name, templates = %refs.join(", "), "analysis run created");
                    save_run(&self.state, name, &run);
                    self.runs.insert(name.clone(), run);
                }
                Ok(())
            }
            Effect::DeleteAnalysisRun { name } => self.delete_run(&managed.name, name),
            Effect::TerminateAnalysisRun { name } => {
                if let Some(run) = self.runs.get_mut(name)
                    && !run.spec.terminate
                {
                    run.spec.terminate = true;
                    if run.next_at.is_some() {
                        run.next_at = Some(now);
                    }
                    save_run(&self.state, name, run);
                }
                Ok(())
            }
            Effect::SetHeaderRoute { .. }
            | Effect::RemoveHeaderRoute { .. }
            | Effect::SetMirrorRoute { .. }
            | Effect::RemoveMirrorRoute { .. } => {
                let routes = changed_routes(managed.proxy.current().routes, effect);
                managed
                    .proxy
                    .handle()
                    .set_routes(routes)
                    .map_err(ActError::Route)
            }
            Effect::DeleteRevision { revision } => {
                match self
                    .supervisor
                    .stop_revision(&supervisor_key(&managed.name, revision))
                    .await
                {
                    Ok(()) | Err(SupervisorError::UnknownRevision { .. }) => {}
                    Err(source) => return Err(ActError::Process(source)),
                }
                managed.created_at.remove(revision);
                managed.revision_settings.remove(revision);
                if *revision != desired_revision(&managed.spec, None) {
                    managed.revisions.remove(revision);
                }
                store_rollout(&self.state, managed).map_err(ActError::Record)
            }
            // Local processes have no labels or annotations: the settings are recorded (and
            // reported back, so the decision converges); `observe` counts a process as ready
            // once it has been ready for the recorded minReadySeconds.
            Effect::SetRevisionSettings { revision, settings } => {
                managed
                    .revision_settings
                    .insert(revision.clone(), settings.clone());
                Ok(())
            }
            // Never decided here: a workloadRef is a spec problem on this platform (see
            // `observation`), and an invalid spec moves nothing.
            Effect::ScaleDownWorkload { .. } => Ok(()),
            Effect::Event {
                type_,
                reason,
                message,
            } => {
                let type_ = match type_ {
                    EventType::Normal => {
                        tracing::info!(rollout = %managed.name, %reason, %message, "event");
                        "Normal"
                    }
                    EventType::Warning => {
                        tracing::warn!(rollout = %managed.name, %reason, %message, "event");
                        "Warning"
                    }
                };
                managed.events.push(EventRecord {
                    time: now,
                    type_: type_.to_owned(),
                    reason: reason.clone(),
                    message: message.clone(),
                });
                if managed.events.len() > EVENTS_KEPT {
                    let excess = managed.events.len() - EVENTS_KEPT;
                    managed.events.drain(..excess);
                }
                self.state
                    .save(&format!("{}.events", managed.name), &managed.events)
                    .map_err(ActError::Record)
            }
        }
    }

    pub(super) async fn scale(
        &mut self,
        managed: &mut Managed,
        revision: &str,
        replicas: i32,
        now: Timestamp,
    ) -> Result<(), ActError> {
        let key = supervisor_key(&managed.name, revision);
        let replicas = replicas.max(0) as u32;
        if let Some(seen) = self.supervisor.status().get(&key) {
            if seen.desired != replicas {
                self.supervisor
                    .scale_revision(&key, replicas)
                    .await
                    .map_err(ActError::Process)?;
            }
            return Ok(());
        }
        if replicas == 0 {
            return Ok(());
        }
        // A baseline runs its stable revision's template (see `rollout::baseline`).
        let template_of = baseline_of(revision).unwrap_or(revision);
        let template =
            managed
                .revisions
                .get(template_of)
                .ok_or_else(|| ActError::FindTemplate {
                    revision: revision.to_owned(),
                })?;
        let spec = ProcessSpec::from_pod_template(template).map_err(ActError::Process)?;
        managed.created_at.entry(revision.to_owned()).or_insert(now);
        match self.supervisor.start_revision(&key, spec, replicas).await {
            Ok(()) => Ok(()),
            // The revision stays registered and keeps retrying with backoff (the binary may
            // appear later); the status message names the command while it is not ready.
            Err(error @ SupervisorError::SpawnProcess { .. }) => {
                tracing::warn!(rollout = %managed.name, %revision, %error, "revision not started");
                Ok(())
            }
            Err(error) => Err(ActError::Process(error)),
        }
    }

    pub(super) fn create_run(
        &self,
        rollout: &str,
        templates: &[String],
        args: &[Argument],
        stable: &str,
        canary: &str,
        now: Timestamp,
    ) -> RunEntry {
        let failed = |spec: AnalysisRunSpec, reason: String| RunEntry {
            rollout: rollout.to_owned(),
            created_at: Some(now),
            spec,
            status: errored_status(&AnalysisRunStatus::default(), reason.clone(), now),
            clients: Err(reason),
            next_at: None,
            jobs: LocalJobs::default(),
        };
        let spec = match self.run_spec(rollout, templates, args, stable, canary) {
            Ok(spec) => spec,
            Err(reason) => return failed(AnalysisRunSpec::default(), reason),
        };
        match clients_for(
            &spec,
            &self.config.command_line_prometheus(),
            &NoSecrets,
            &self.limiter,
        ) {
            Ok(clients) => RunEntry {
                rollout: rollout.to_owned(),
                created_at: Some(now),
                spec,
                status: AnalysisRunStatus::default(),
                clients: Ok(clients),
                next_at: Some(now),
                jobs: LocalJobs::default(),
            },
            Err(error) => failed(spec, error.to_string()),
        }
    }

    /// Deletes the finished run `name` of `rollout` beyond the history limits: its state file
    /// and the engine's copy (the release history and the reports written at each release's
    /// end do not read runs, so `vigil history` keeps every release). Absent counts as done.
    fn delete_run(&mut self, rollout: &str, name: &str) -> Result<(), ActError> {
        if self.runs.get(name).is_none_or(|run| run.rollout != rollout) {
            return Ok(());
        }
        self.state
            .remove(&run_key(name))
            .map_err(ActError::Record)?;
        if let Some(run) = self.runs.remove(name) {
            run.jobs.stop_all();
        }
        tracing::info!(%rollout, run = %name, "analysis run deleted (beyond the run history limits)");
        Ok(())
    }

    /// Points the proxy at the ready processes of the revisions the local "services" select,
    /// with the weight as set; does nothing when that is already what it does.
    pub(super) fn apply_routing(&self, managed: &mut Managed) -> Result<(), ProxyError> {
        let Some(stable) = &managed.stable_service else {
            return Ok(());
        };
        let processes = self.supervisor.status();
        let backend = |revision: &String| Backend {
            revision: revision.clone(),
            addrs: processes
                .get(&supervisor_key(&managed.name, revision))
                .map(|seen| seen.addrs.clone())
                .unwrap_or_default(),
        };
        let wanted = routing_for(
            backend(stable),
            managed.canary_service.as_ref().map(backend),
            managed.weight,
        );
        let current = managed.proxy.current();
        let same = current.stable == wanted.stable
            && current.canary == wanted.canary
            && current.canary_weight == wanted.canary_weight;
        if !same {
            let RoutingState {
                stable,
                canary,
                canary_weight,
                ..
            } = wanted;
            if let Some(stable) = stable {
                managed.proxy.set_backends(stable, canary, canary_weight)?;
            }
        }
        self.apply_baseline_routing(managed, stable)
    }

    /// Points the proxy's baseline at the ready processes of the stable's baseline (see
    /// `rollout::baseline`), with its weight once one of them is ready (like the canary's).
    fn apply_baseline_routing(&self, managed: &Managed, stable: &str) -> Result<(), ProxyError> {
        let revision = baseline_revision(stable);
        let baseline = self
            .supervisor
            .status()
            .get(&supervisor_key(&managed.name, &revision))
            .map(|seen| Backend {
                revision: revision.clone(),
                addrs: seen.addrs.clone(),
            });
        let ready = baseline.as_ref().is_some_and(|b| !b.addrs.is_empty());
        let weight = if ready { managed.baseline_weight } else { 0 };
        let current = managed.proxy.current();
        if current.baseline != baseline || current.baseline_weight != weight {
            managed.proxy.handle().set_baseline(baseline, weight)?;
        }
        Ok(())
    }
}

/// `routes` after one managed-route effect (the proxy holds them whole).
fn changed_routes(
    routes: crate::traffic::ManagedRoutes,
    effect: &Effect,
) -> crate::traffic::ManagedRoutes {
    let (mut header, mut mirror) = (routes.header, routes.mirror);
    match effect {
        Effect::SetHeaderRoute { route } => {
            header.retain(|r| r.name != route.name);
            header.push(route.clone());
        }
        Effect::RemoveHeaderRoute { name } => header.retain(|r| r.name != *name),
        Effect::SetMirrorRoute { route } => {
            mirror.retain(|r| r.name != route.name);
            mirror.push(route.clone());
        }
        Effect::RemoveMirrorRoute { name } => mirror.retain(|r| r.name != *name),
        _ => {}
    }
    crate::traffic::ManagedRoutes::new(header, mirror)
}

/// The routing the proxy should have: the canary gets its weight only once it has a ready
/// replica. Until then (a fresh canary, or every process restarting after the engine was
/// killed) its share goes to stable, so the canary is never charged with the 502s of a
/// revision that is not up yet; the rollout sees weight 0 and its step waits.
pub(super) fn routing_for(stable: Backend, canary: Option<Backend>, weight: u8) -> RoutingState {
    let canary_ready = canary.as_ref().is_some_and(|c| !c.addrs.is_empty());
    RoutingState {
        stable: Some(stable),
        canary,
        canary_weight: if canary_ready { weight } else { 0 },
        ..RoutingState::default()
    }
}

#[cfg(test)]
mod process_note_tests {
    use super::with_process_note;

    /// Issue 16, friction 5: after an abort the message repeated the note once per tick.
    #[test]
    fn the_note_replaces_the_previous_one_instead_of_piling_up() {
        let note = "revision b1: 0/1 ready: exited with status 1";
        let mut message = Some("aborted by a user at step 2/5".to_owned());
        for _ in 0..4 {
            message = with_process_note(message, Some(note));
        }
        assert_eq!(
            message.as_deref(),
            Some(
                "aborted by a user at step 2/5; processes: revision b1: 0/1 ready: exited with \
                 status 1"
            )
        );
        assert_eq!(
            with_process_note(message, None).as_deref(),
            Some("aborted by a user at step 2/5")
        );
        assert_eq!(
            with_process_note(None, Some(note)).as_deref(),
            Some("processes: revision b1: 0/1 ready: exited with status 1")
        );
    }
}
