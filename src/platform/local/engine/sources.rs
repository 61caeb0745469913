//! Loading: Rollouts and AnalysisTemplates from files or an `/apply` body (through the one
//! YAML loader, [`crate::manifest`]), and the listen addresses a Rollout asks for.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Rollouts and AnalysisTemplates read from files or an `/apply` body.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The Rollouts.
    pub rollouts: Vec<Rollout>,
    /// The AnalysisTemplates (and ClusterAnalysisTemplates), by name.
    pub templates: Vec<(String, AnalysisTemplateSpec)>,
}

impl Sources {
    /// Reads and lints `paths`; any problem `vigil lint` reports is an error naming the file and
    /// the field.
    pub fn load(paths: &[PathBuf]) -> Result<Self, EngineError> {
        let mut sources = Sources::default();
        for path in paths {
            let text = std::fs::read_to_string(path).map_err(|source| EngineError::ReadFile {
                path: path.clone(),
                source,
            })?;
            sources.merge(Sources::parse(path, &text)?);
        }
        Ok(sources)
    }

    /// Lints and parses the documents of one file (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, EngineError> {
        // Before any parser: deep nesting costs the parser quadratic time.
        crate::platform::local::yaml_guard::check_nesting(text).map_err(|error| {
            EngineError::LintFile {
                problems: format!("{}: {error}", path.display()),
            }
        })?;
        let problems = crate::lint::lint_file(path, text);
        if !problems.is_empty() {
            let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            return Err(EngineError::LintFile {
                problems: lines.join("\n"),
            });
        }
        let file = path.display().to_string();
        let parse_error = |index: usize, reason: String| EngineError::ParseDocument {
            file: file.clone(),
            index,
            reason,
        };
        let mut sources = Sources::default();
        let manifests =
            crate::manifest::manifests(text).map_err(|e| parse_error(e.index, e.reason))?;
        for (index, manifest) in manifests {
            match manifest {
                Manifest::Rollout(rollout) => sources.rollouts.push(*rollout),
                Manifest::AnalysisTemplate { name, spec } => {
                    sources.templates.push((name.unwrap_or_default(), spec));
                }
                Manifest::Other { kind } => {
                    return Err(parse_error(
                        index,
                        format!(
                            "kind {kind:?}: vigil run takes Rollout and AnalysisTemplate documents"
                        ),
                    ));
                }
            }
        }
        Ok(sources)
    }

    /// Adds `other`'s documents.
    pub fn merge(&mut self, other: Sources) {
        self.rollouts.extend(other.rollouts);
        self.templates.extend(other.templates);
    }
}

pub(super) fn listen_addresses(
    name: &str,
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: &RolloutSpec,
) -> Result<(SocketAddr, SocketAddr), EngineError> {
    let problem = |field: &str, problem: String| EngineError::ReadListenAddress {
        rollout: name.to_owned(),
        field: field.to_owned(),
        problem,
    };
    let (field, listen) = match &spec.strategy.blue_green {
        Some(bg) => (
            "spec.strategy.blueGreen.local.listen",
            bg.local.as_ref().map(|l| l.listen.clone()),
        ),
        None => (
            "spec.strategy.canary.trafficRouting.local.listen",
            spec.strategy
                .canary
                .traffic_routing
                .as_ref()
                .and_then(|t| t.local.as_ref())
                .map(|l| l.listen.clone()),
        ),
    };
    let listen = listen.ok_or_else(|| {
        problem(
            field,
            "missing: vigil run needs the address of the local proxy, e.g. 127.0.0.1:8080"
                .to_owned(),
        )
    })?;
    let listen: SocketAddr = listen
        .parse()
        .map_err(|e| problem(field, format!("{listen:?} is not an IP:port address: {e}")))?;
    let annotation = format!("metadata.annotations[{METRICS_LISTEN_ANNOTATION}]");
    let metrics = match metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(METRICS_LISTEN_ANNOTATION))
    {
        Some(text) => text.parse().map_err(|e| {
            problem(
                &annotation,
                format!("{text:?} is not an IP:port address: {e}"),
            )
        })?,
        None => SocketAddr::new(listen.ip(), 0),
    };
    Ok((listen, metrics))
}

/// The address of the preview listener of a blue-green Rollout
/// (`spec.strategy.blueGreen.local.previewListen`), if it has one.
pub(super) fn preview_listen_address(
    name: &str,
    spec: &RolloutSpec,
) -> Result<Option<SocketAddr>, EngineError> {
    let field = "spec.strategy.blueGreen.local.previewListen";
    let Some(text) = spec
        .strategy
        .blue_green
        .as_ref()
        .and_then(|bg| bg.local.as_ref())
        .and_then(|l| l.preview_listen.as_ref())
    else {
        return Ok(None);
    };
    text.parse()
        .map(Some)
        .map_err(|e| EngineError::ReadListenAddress {
            rollout: name.to_owned(),
            field: field.to_owned(),
            problem: format!("{text:?} is not an IP:port address: {e}"),
        })
}
