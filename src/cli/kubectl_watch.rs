//! `vigil get rollout NAME --watch` on a cluster: the live view of `cli::live_view` over the
//! Rollout and its AnalysisRuns, read through the API every 2 s. A dashboard on a terminal,
//! plain lines otherwise; an API that stops answering is said once and read again until it
//! answers.

use std::io::IsTerminal;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::kubectl::CliError;
use super::live_view::{dashboard, errors_between, frame, plain_line};
use crate::api::{AnalysisRun, Rollout};
use crate::platform::kubernetes::context::{ROLLOUT_LABEL, rollout_label_value};
use crate::platform::local::engine::RunView;

async fn read(
    rollouts: &Api<Rollout>,
    runs: &Api<AnalysisRun>,
    name: &str,
) -> Result<(Rollout, Vec<RunView>), CliError> {
    let rollout = rollouts
        .get(name)
        .await
        .map_err(|source| CliError::GetRollout {
            name: name.to_owned(),
            source,
        })?;
    let selector = format!("{ROLLOUT_LABEL}={}", rollout_label_value(name));
    let listed = runs
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| CliError::GetRollout {
            name: name.to_owned(),
            source,
        })?;
    let mut views: Vec<RunView> = listed
        .items
        .into_iter()
        .map(|run| RunView {
            name: run.name_any(),
            status: run.status.unwrap_or_default(),
        })
        .collect();
    views.sort_by_key(|r| r.status.started_at.as_ref().map(|t| t.0));
    Ok((rollout, views))
}

/// Watches the Rollout `name` in `namespace` until Ctrl-C.
pub async fn watch(client: Client, namespace: &str, name: &str) -> Result<(), CliError> {
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), namespace);
    let runs: Api<AnalysisRun> = Api::namespaced(client, namespace);
    let terminal = std::io::stdout().is_terminal();
    let mut previous: Option<Vec<RunView>> = None;
    let mut last_line = None;
    let mut failing = false;
    loop {
        let now = Timestamp::now();
        match read(&rollouts, &runs, name).await {
            Ok((rollout, views)) => {
                if failing {
                    crate::outln!("{} the API answers again", now.strftime("%H:%M:%S"));
                    failing = false;
                }
                for line in errors_between(name, previous.as_deref(), &views, now) {
                    crate::outln!("{line}");
                }
                let status = rollout.status.unwrap_or_default();
                let shown = frame(name, &status, &views, now);
                if terminal {
                    super::write_stdout(&format!("\x1b[H\x1b[2J{}", dashboard(&shown, true)));
                } else {
                    let line = plain_line(&shown);
                    let key = line.split_once(' ').map(|(_, rest)| rest.to_owned());
                    if key != last_line {
                        crate::outln!("{line}");
                        last_line = key;
                    }
                }
                previous = Some(views);
            }
            Err(error) if !failing => {
                crate::outln!(
                    "{} {error}; reading again until it answers (Ctrl-C to stop)",
                    now.strftime("%H:%M:%S")
                );
                failing = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
