//! Job metrics on Kubernetes: each measurement is a batch/v1 Job owned by its AnalysisRun,
//! created only in namespaces that opted in (SECURITY.md), bounded in time, followed until it
//! ends, judged with the last lines of its pod's log, and deleted when the run ends.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::OnceCell;

use crate::analysis::job::{
    JOB_NAMESPACE_OPT_IN_LABEL, JOB_NAMESPACE_OPT_IN_VALUE, JobRunner, JobState, LOG_TAIL_BYTES,
    LOG_TAIL_LINES, MAX_JOB_PODS, job_name, job_spec, job_timeout,
};
use crate::api::{AnalysisRun, Metric};

/// Label the Job controller puts on a Job's pods: the Job's uid.
pub const JOB_CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";

/// Label on every Job vigil creates: the AnalysisRun it measures for.
pub const JOB_RUN_LABEL: &str = "vigil.dev/analysis-run";
/// Label on every Job vigil creates: the metric it measures.
pub const JOB_METRIC_LABEL: &str = "vigil.dev/metric";
/// A finished Job is removed by Kubernetes after this long even if vigil never deletes it
/// (a safety net; vigil deletes a run's Jobs when the run ends).
pub const JOB_TTL_AFTER_FINISHED_SECONDS: i32 = 3600;

/// `text` as a label value: characters a label value may not hold become `-`, and it is fitted
/// to 63 characters (with a hash when cut).
pub fn label_value(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    crate::rollout::fit_name(trimmed, crate::rollout::MAX_LABEL_VALUE_LEN)
}

/// The Jobs of one AnalysisRun, in its namespace.
pub struct KubeJobs {
    client: Client,
    namespace: String,
    run: String,
    run_uid: String,
    opted_in: OnceCell<Result<(), String>>,
}

impl KubeJobs {
    /// The Jobs of `run` (which must be stored: it has a namespace and a uid).
    pub fn new(client: Client, run: &AnalysisRun) -> Self {
        KubeJobs {
            client,
            namespace: run.namespace().unwrap_or_default(),
            run: run.name_any(),
            run_uid: run.uid().unwrap_or_default(),
            opted_in: OnceCell::new(),
        }
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Whether the namespace allows job metrics (read once per reconcile).
    async fn check_opt_in(&self) -> Result<(), String> {
        self.opted_in
            .get_or_init(|| async {
                let namespaces: Api<Namespace> = Api::all(self.client.clone());
                let namespace = namespaces
                    .get(&self.namespace)
                    .await
                    .map_err(|e| format!("read namespace {:?}: {e}", self.namespace))?;
                let label = namespace.labels().get(JOB_NAMESPACE_OPT_IN_LABEL);
                if label.map(String::as_str) == Some(JOB_NAMESPACE_OPT_IN_VALUE) {
                    Ok(())
                } else {
                    Err(format!(
                        "namespace {:?} does not allow job metrics: its administrator must label it {JOB_NAMESPACE_OPT_IN_LABEL}={JOB_NAMESPACE_OPT_IN_VALUE} (whoever writes templates there can then run Jobs; see SECURITY.md)",
                        self.namespace
                    ))
                }
            })
            .await
            .clone()
    }

    fn owner(&self) -> OwnerReference {
        OwnerReference {
            api_version: "vigil.dev/v1alpha1".to_owned(),
            kind: "AnalysisRun".to_owned(),
            name: self.run.clone(),
            uid: self.run_uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn is_ours(&self, job: &Job) -> bool {
        job.owner_references()
            .iter()
            .any(|o| o.uid == self.run_uid && o.kind == "AnalysisRun")
    }

    /// The Job of the `ordinal`-th measurement of `metric`, with vigil's labels, owner and
    /// bounds.
    pub fn job_for(&self, metric: &Metric, ordinal: i32) -> Result<Job, String> {
        let provider = metric
            .provider
            .job
            .as_ref()
            .ok_or_else(|| "no provider.job".to_owned())?;
        let mut spec: JobSpec = job_spec(provider).map_err(|e| e.to_string())?;
        let timeout = job_timeout(provider).map_err(|e| e.to_string())?;
        let deadline = i64::try_from(timeout.as_secs().max(1)).unwrap_or(i64::MAX);
        spec.active_deadline_seconds = Some(
            spec.active_deadline_seconds
                .map_or(deadline, |set| set.clamp(1, deadline)),
        );
        // A suspended Job never starts (its deadline never runs); a selector of the
        // template's would let the Job controller adopt, and kill, pods that are not its own.
        spec.suspend = None;
        spec.manual_selector = None;
        spec.selector = None;
        spec.parallelism = Some(spec.parallelism.unwrap_or(1).clamp(0, MAX_JOB_PODS));
        spec.completions = spec.completions.map(|n| n.clamp(0, MAX_JOB_PODS));
        spec.backoff_limit.get_or_insert(0);
        spec.ttl_seconds_after_finished
            .get_or_insert(JOB_TTL_AFTER_FINISHED_SECONDS);
        let metadata = provider.metadata.clone().unwrap_or_default();
        let mut labels: BTreeMap<String, String> = metadata.labels;
        labels.insert(JOB_RUN_LABEL.to_owned(), label_value(&self.run));
        labels.insert(JOB_METRIC_LABEL.to_owned(), label_value(&metric.name));
        let mut annotations = metadata.annotations;
        annotations.insert(JOB_METRIC_LABEL.to_owned(), metric.name.clone());
        Ok(Job {
            metadata: ObjectMeta {
                name: Some(job_name(&self.run, &metric.name, ordinal)),
                namespace: Some(self.namespace.clone()),
                labels: Some(labels),
                annotations: Some(annotations),
                owner_references: Some(vec![self.owner()]),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
            status: None,
        })
    }

    /// The tail of the log of the Job's newest pod; a text saying why when there is none.
    async fn log_of(&self, job: &Job) -> String {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let Some(uid) = job.uid() else {
            return "(no log: the Job has no uid)".to_owned();
        };
        // By the Job's uid, which the Job controller sets on its pods, not by the name anyone
        // can put on a pod.
        let listed = pods
            .list(&ListParams::default().labels(&format!("{JOB_CONTROLLER_UID_LABEL}={uid}")))
            .await;
        let newest = match listed {
            Ok(list) => list
                .items
                .into_iter()
                .max_by_key(|p| p.creation_timestamp().map(|t| t.0)),
            Err(e) => return format!("(no log: list its pods: {e})"),
        };
        let Some(pod) = newest else {
            return "(no log: the Job has no pod)".to_owned();
        };
        let params = LogParams {
            tail_lines: Some(LOG_TAIL_LINES as i64),
            limit_bytes: Some(LOG_TAIL_BYTES as i64),
            ..LogParams::default()
        };
        match pods.logs(&pod.name_any(), &params).await {
            Ok(log) => log,
            Err(e) => format!("(no log: read the log of pod {}: {e})", pod.name_any()),
        }
    }

    /// Deletes every Job of the run (background propagation: its pods go too). Called when
    /// the run has ended.
    pub async fn delete_all(&self) -> Result<usize, kube::Error> {
        let selector = format!("{JOB_RUN_LABEL}={}", label_value(&self.run));
        let listed = self
            .jobs()
            .list(&ListParams::default().labels(&selector))
            .await?;
        let mut deleted = 0;
        for job in listed.items.iter().filter(|j| self.is_ours(j)) {
            match self
                .jobs()
                .delete(&job.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => deleted += 1,
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }
}

impl JobRunner for KubeJobs {
    async fn start(&self, metric: &Metric, ordinal: i32) -> Result<String, String> {
        self.check_opt_in().await?;
        let job = self.job_for(metric, ordinal)?;
        let name = job.name_any();
        match self.jobs().create(&PostParams::default(), &job).await {
            Ok(_) => Ok(name),
            // Created before a restart, its status never written: follow that one.
            Err(kube::Error::Api(e)) if e.code == 409 => match self.jobs().get(&name).await {
                Ok(existing) if self.is_ours(&existing) => Ok(name),
                Ok(_) => Err(format!(
                    "a Job named {name} exists and does not belong to this run"
                )),
                Err(e) => Err(format!("read Job {name}: {e}")),
            },
            Err(e) => Err(format!("create Job {name}: {e}")),
        }
    }

    async fn stop(&self, job: &str) {
        match self.jobs().get(job).await {
            Ok(found) if self.is_ours(&found) => {
                if let Err(e) = self.jobs().delete(job, &DeleteParams::background()).await {
                    tracing::warn!(%job, error = %e, "cannot delete the overdue Job");
                }
            }
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => tracing::warn!(%job, error = %e, "cannot read the overdue Job"),
        }
    }

    async fn check(&self, job: &str) -> JobState {
        // The name comes from the run's status, which others may write: follow only a Job
        // this run created, in a namespace that opted in.
        if let Err(reason) = self.check_opt_in().await {
            return JobState::Lost { reason };
        }
        let found = match self.jobs().get(job).await {
            Ok(found) if self.is_ours(&found) => found,
            Ok(_) => {
                return JobState::Lost {
                    reason: format!("the Job {job} does not belong to this run"),
                };
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                return JobState::Lost {
                    reason: "the Job was deleted before it ended".to_owned(),
                };
            }
            // Not a verdict: check again later.
            Err(e) => {
                tracing::warn!(%job, error = %e, "cannot read the Job; checking again later");
                return JobState::Running;
            }
        };
        let conditions = found
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let holds = |kind: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == kind && c.status == "True")
        };
        if holds("Complete").is_some() {
            return JobState::Succeeded {
                log: self.log_of(&found).await,
            };
        }
        if let Some(failed) = holds("Failed") {
            let reason = match (&failed.reason, &failed.message) {
                (Some(r), Some(m)) => format!("{r}: {m}"),
                (Some(r), None) => r.clone(),
                (None, Some(m)) => m.clone(),
                (None, None) => "the Job failed".to_owned(),
            };
            return JobState::Failed {
                reason,
                log: self.log_of(&found).await,
            };
        }
        JobState::Running
    }
}
