//! Why a reconcile of a Rollout failed, and how the Kubernetes API's answers are read.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Why a reconcile of a Rollout failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reconcile panicked (a bug): counted and retried with backoff, others go on.
    #[error("reconcile panicked: {message}")]
    ReconcilePanicked {
        /// The panic's message.
        message: String,
    },
    /// The object lacks a field every stored object has.
    #[error("rollout has no {key}")]
    MissingObjectKey {
        /// The field.
        key: &'static str,
    },
    /// Reading a Service failed.
    #[error("failed to get service {service}: {source}")]
    GetService {
        /// The Service.
        service: String,
        /// The cause.
        source: kube::Error,
    },
    /// Reading the Rollout a Service's claim names (to tell whether it still names the
    /// Service) failed.
    #[error("failed to get rollout {claimant}, which claims service {service}: {source}")]
    GetClaimant {
        /// The Rollout the claim names.
        claimant: String,
        /// The Service.
        service: String,
        /// The cause.
        source: kube::Error,
    },
    /// Scaling a ReplicaSet failed.
    #[error("failed to scale ReplicaSet {replica_set} to {replicas}: {source}")]
    ScaleReplicaSet {
        /// The ReplicaSet.
        replica_set: String,
        /// Pods wanted.
        replicas: i32,
        /// The cause.
        source: kube::Error,
    },
    /// Setting a revision's pod metadata and minReadySeconds on its ReplicaSet failed.
    #[error(
        "failed to set the pod metadata and minReadySeconds of ReplicaSet {replica_set}: {source}"
    )]
    SetRevisionSettings {
        /// The ReplicaSet.
        replica_set: String,
        /// The cause.
        source: kube::Error,
    },
    /// Listing or labelling the running pods of a revision failed.
    #[error("failed to put the role metadata on the pods of revision {revision}: {source}")]
    LabelPods {
        /// The revision.
        revision: String,
        /// The cause.
        source: kube::Error,
    },
    /// Creating a revision's ReplicaSet failed.
    #[error("failed to create ReplicaSet {replica_set}: {source}")]
    CreateReplicaSet {
        /// The ReplicaSet.
        replica_set: String,
        /// The cause.
        source: kube::Error,
    },
    /// Reading the stable revision's ReplicaSet, whose pod template a baseline runs, failed
    /// (not found included: without it there is no template to copy).
    #[error(
        "failed to get ReplicaSet {replica_set}, the template of baseline {baseline}: {source}"
    )]
    GetBaselineTemplate {
        /// The stable revision's ReplicaSet.
        replica_set: String,
        /// The baseline's revision.
        baseline: String,
        /// The cause.
        source: kube::Error,
    },
    /// A ReplicaSet vigil would create, scale or copy a pod template from exists but is not
    /// controlled by this Rollout (another owner's, or a look-alike): vigil never adopts,
    /// scales or copies it.
    #[error(
        "ReplicaSet {replica_set} is not controlled by rollout {rollout}: vigil neither adopts, \
         scales nor copies it (delete or rename it)"
    )]
    ForeignReplicaSet {
        /// The ReplicaSet.
        replica_set: String,
        /// The Rollout.
        rollout: String,
    },
    /// Reading a ReplicaSet that already existed, to see whose it is, failed.
    #[error("failed to get ReplicaSet {replica_set} to check its owner: {source}")]
    CheckReplicaSetOwner {
        /// The ReplicaSet.
        replica_set: String,
        /// The cause.
        source: kube::Error,
    },
    /// Deleting an old revision failed.
    #[error("failed to delete ReplicaSet {replica_set}: {source}")]
    DeleteReplicaSet {
        /// The ReplicaSet.
        replica_set: String,
        /// The cause.
        source: kube::Error,
    },
    /// Reading the Deployment `spec.workloadRef` names failed (other than "not found", which
    /// is a problem of the spec, shown in status).
    #[error("failed to get Deployment {deployment} (spec.workloadRef): {source}")]
    GetDeployment {
        /// The Deployment.
        deployment: String,
        /// The cause.
        source: kube::Error,
    },
    /// Scaling down the Deployment `spec.workloadRef` names failed; a `test` failure means
    /// someone changed its replicas since they were read (the next reconcile reads them again).
    #[error(
        "failed to scale Deployment {deployment} (spec.workloadRef) from {observed} to {replicas}: {source}"
    )]
    ScaleDownDeployment {
        /// The Deployment.
        deployment: String,
        /// Its replicas as read.
        observed: i32,
        /// Replicas wanted.
        replicas: i32,
        /// The cause.
        source: kube::Error,
    },
    /// Setting the router's weight failed.
    #[error("failed to set the canary weight of rollout {rollout} to {weight}: {source}")]
    SetWeight {
        /// The Rollout.
        rollout: String,
        /// The weight.
        weight: i32,
        /// The cause (boxed: router errors are large).
        source: Box<TrafficError>,
    },
    /// Setting the baseline's weight on the router (the Gateway API's three-way split) failed.
    #[error("failed to set the baseline weight of rollout {rollout} to {weight}: {source}")]
    SetBaselineWeight {
        /// The Rollout.
        rollout: String,
        /// The baseline's weight.
        weight: i32,
        /// The cause (boxed: router errors are large).
        source: Box<TrafficError>,
    },
    /// Pointing the router's own revision selectors (Istio's DestinationRule subsets) failed.
    #[error("failed to point the router of rollout {rollout} at revisions: {source}")]
    PointRouterRevisions {
        /// The Rollout.
        rollout: String,
        /// The cause (boxed: router errors are large).
        source: Box<TrafficError>,
    },
    /// Setting or removing a managed header or mirror route failed.
    #[error("failed to change the managed route {route} of rollout {rollout}: {source}")]
    SetManagedRoute {
        /// The Rollout.
        rollout: String,
        /// The route's name.
        route: String,
        /// The cause (boxed: router errors are large).
        source: Box<TrafficError>,
    },
    /// Reading an AnalysisTemplate or ClusterAnalysisTemplate failed.
    #[error("failed to get analysis template {template}: {source}")]
    GetTemplate {
        /// The template (`cluster/` prefixed for a ClusterAnalysisTemplate).
        template: String,
        /// The cause.
        source: kube::Error,
    },
    /// An argument's `valueFrom` could not be read.
    #[error("failed to resolve argument {arg}: {reason}")]
    ResolveArg {
        /// The argument.
        arg: String,
        /// Why (never the value).
        reason: String,
    },
    /// An analysis cannot start because of the spec: a template that does not exist, an
    /// argument that does not resolve, templates that do not combine. The Rollout holds and
    /// says why in status.
    #[error("{}: {}", problem.path, problem.message)]
    PrepareAnalysis {
        /// The field at fault and what is wrong, as status shows it.
        problem: SpecProblem,
        /// The failure behind it.
        source: Box<Error>,
    },
    /// The templates and arguments do not make a run.
    #[error("failed to build AnalysisRun {run}: {source}")]
    Instantiate {
        /// The run.
        run: String,
        /// The cause.
        source: InstantiateError,
    },
    /// The decision asked for a run of an analysis the dereference step did not prepare (a
    /// bug: the core creates only runs of declared analyses, and holds on their problems).
    #[error("AnalysisRun {run} was not prepared by the dereference step")]
    FindPreparedRun {
        /// The run.
        run: String,
    },
    /// Creating an AnalysisRun failed.
    #[error("failed to create AnalysisRun {run}: {source}")]
    CreateAnalysisRun {
        /// The run.
        run: String,
        /// The cause.
        source: kube::Error,
    },
    /// Terminating an AnalysisRun failed.
    #[error("failed to terminate AnalysisRun {run}: {source}")]
    TerminateAnalysisRun {
        /// The run.
        run: String,
        /// The cause.
        source: kube::Error,
    },
    /// Deleting an AnalysisRun beyond the history limits failed.
    #[error("failed to delete AnalysisRun {run}: {source}")]
    DeleteAnalysisRun {
        /// The run.
        run: String,
        /// The cause.
        source: kube::Error,
    },
    /// Pointing a Service at a revision failed.
    #[error("failed to point service {service} at revision {revision}: {source}")]
    PatchService {
        /// The Service.
        service: String,
        /// The revision.
        revision: String,
        /// The cause.
        source: kube::Error,
    },
    /// Giving up the claim on a Service (at deletion) failed.
    #[error("failed to give up the claim on service {service}: {source}")]
    ReleaseService {
        /// The Service.
        service: String,
        /// The cause.
        source: kube::Error,
    },
    /// A Service was not pointed: another Rollout manages it.
    #[error(
        "refused to point service {service}: Rollout {claimant} manages it (annotation vigil.dev/managed-by-rollout)"
    )]
    ClaimService {
        /// The Service.
        service: String,
        /// The Rollout that manages it.
        claimant: String,
    },
    /// Recording the status failed.
    #[error("failed to write the status of rollout {rollout}: {source}")]
    WriteStatus {
        /// The Rollout.
        rollout: String,
        /// The cause.
        source: kube::Error,
    },
    /// The status could not be put into a patch (JSON).
    #[error("failed to serialize the status of rollout {rollout}: {source}")]
    SerializeStatus {
        /// The Rollout.
        rollout: String,
        /// The cause.
        source: serde_json::Error,
    },
    /// Adding or removing the finalizer failed, or the reconcile inside it did.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// A stable snake_case label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::ReconcilePanicked { .. } => "reconcile_panicked",
            Error::MissingObjectKey { .. } => "missing_object_key",
            Error::GetService { .. } => "get_service",
            Error::GetClaimant { .. } => "get_claimant",
            Error::ScaleReplicaSet { .. } => "scale_replica_set",
            Error::CreateReplicaSet { .. } => "create_replica_set",
            Error::SetRevisionSettings { .. } => "set_revision_settings",
            Error::LabelPods { .. } => "label_pods",
            Error::DeleteReplicaSet { .. } => "delete_replica_set",
            Error::GetBaselineTemplate { .. } => "get_baseline_template",
            Error::ForeignReplicaSet { .. } => "foreign_replica_set",
            Error::CheckReplicaSetOwner { .. } => "check_replica_set_owner",
            Error::SetWeight { .. } => "set_weight",
            Error::SetBaselineWeight { .. } => "set_baseline_weight",
            Error::PointRouterRevisions { .. } => "point_router_revisions",
            Error::GetDeployment { .. } => "get_deployment",
            Error::ScaleDownDeployment { .. } => "scale_down_deployment",
            Error::SetManagedRoute { .. } => "set_managed_route",
            Error::GetTemplate { .. } => "get_template",
            Error::ResolveArg { .. } => "resolve_arg",
            Error::Instantiate { .. } => "instantiate",
            Error::PrepareAnalysis { source, .. } => source.category(),
            Error::FindPreparedRun { .. } => "find_prepared_run",
            Error::CreateAnalysisRun { .. } => "create_analysis_run",
            Error::TerminateAnalysisRun { .. } => "terminate_analysis_run",
            Error::DeleteAnalysisRun { .. } => "delete_analysis_run",
            Error::PatchService { .. } => "patch_service",
            Error::ClaimService { .. } => "claim_service",
            Error::ReleaseService { .. } => "release_service",
            // The label predates the patch (the write was a PUT); labels stay stable.
            Error::WriteStatus { .. } => "replace_status",
            Error::SerializeStatus { .. } => "serialize_status",
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.category()
                }
                _ => "finalizer",
            },
        }
    }

    /// True when retrying cannot help until the spec (or a template, or the router object)
    /// changes: arguments that do not resolve, templates that do not combine, a router
    /// object without what vigil needs.
    pub fn is_invalid_spec(&self) -> bool {
        match self {
            Error::ResolveArg { .. }
            | Error::Instantiate { .. }
            | Error::PrepareAnalysis { .. } => true,
            Error::SetWeight { source, .. }
            | Error::SetBaselineWeight { source, .. }
            | Error::SetManagedRoute { source, .. }
            | Error::PointRouterRevisions { source, .. } => matches!(
                **source,
                TrafficError::ReadObject { .. } | TrafficError::Unsupported { .. }
            ),
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.is_invalid_spec()
                }
                _ => false,
            },
            _ => false,
        }
    }
}

pub(super) fn not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_not_found())
}

pub(super) fn already_exists(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_already_exists())
}

pub(super) fn conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_conflict())
}
