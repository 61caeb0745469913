//! `vigil local get|promote|abort|retry|pause|resume|apply`: talk to a running `vigil run`
//! through its admin endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::platform::local::admin::{
    ADMIN_TOKEN_ENV, ADMIN_TOKEN_FILE, DEFAULT_ADMIN, YAML_CONTENT_TYPE, read_token,
};
use crate::platform::local::engine::{RolloutView, progress_line};

/// Arguments of `vigil local`.
#[derive(Debug, clap::Args)]
pub struct LocalArgs {
    /// Admin endpoint of `vigil run`.
    #[arg(long, global = true, default_value = DEFAULT_ADMIN)]
    pub admin: SocketAddr,
    /// The state directory of that `vigil run`: its admin token is read from `admin.token` there.
    #[arg(long, global = true, default_value = ".vigil")]
    pub state_dir: PathBuf,
    /// The admin token, instead of reading it from the state directory.
    #[arg(long, global = true, env = ADMIN_TOKEN_ENV, hide_env_values = true)]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: LocalCommand,
}

/// The verbs.
#[derive(Debug, clap::Subcommand)]
pub enum LocalCommand {
    /// Show a Rollout: one line (step, weight, phase, verdicts), or JSON with `-o json`.
    Get {
        /// The Rollout.
        name: String,
        /// Print a line at every change until Ctrl-C.
        #[arg(long, short = 'w')]
        watch: bool,
        /// `line` or `json`.
        #[arg(long, short = 'o', default_value = "line")]
        output: String,
    },
    /// List the Rollouts of the state directory with their phase, step and weight (read from
    /// the files; works when `vigil run` is stopped).
    List,
    /// Finish the current step (a pause, an Inconclusive analysis).
    Promote {
        /// The Rollout.
        name: String,
        /// Skip the remaining steps.
        #[arg(long)]
        full: bool,
    },
    /// Roll back to the stable version.
    Abort {
        /// The Rollout.
        name: String,
    },
    /// Start an aborted canary again from step 0.
    Retry {
        /// The Rollout.
        name: String,
    },
    /// Stop moving.
    Pause {
        /// The Rollout.
        name: String,
    },
    /// Move again.
    Resume {
        /// The Rollout.
        name: String,
    },
    /// Apply a new version of a Rollout (and templates) from a file.
    Apply {
        /// The YAML file.
        file: PathBuf,
    },
}

/// Why a local command failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The file could not be read.
    #[error("failed to read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The admin token could not be read.
    #[error(
        "failed to read the admin token from {path}: {source} (is `vigil run` running with \
         --state-dir {dir}? pass the same --state-dir, or --token / {ADMIN_TOKEN_ENV})"
    )]
    ReadToken {
        /// The token file.
        path: PathBuf,
        /// The state directory.
        dir: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The token cannot be sent in a header.
    #[error("failed to use the admin token: it holds characters a header cannot carry")]
    UseToken,
    /// `--admin` is not a loopback address: the token would leave the machine.
    #[error(
        "refusing --admin {admin}: not a loopback address; the admin endpoint only listens on \
         loopback and its token must never leave this machine"
    )]
    RefuseAdmin {
        /// The address given.
        admin: SocketAddr,
    },
    /// The HTTP client could not be built.
    #[error("failed to build the HTTP client: {0}")]
    BuildClient(reqwest::Error),
    /// The engine could not be reached.
    #[error("failed to reach vigil run at {admin}: {source} (is `vigil run` running?)")]
    ReachEngine {
        /// The admin address.
        admin: SocketAddr,
        /// The cause.
        source: reqwest::Error,
    },
    /// The engine refused the request.
    #[error("vigil run answered {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its explanation.
        body: String,
    },
    /// The answer is not what was expected.
    #[error("failed to read the answer: {0}")]
    ParseAnswer(String),
    /// The async runtime could not start.
    #[error("failed to start the async runtime: {0}")]
    StartRuntime(std::io::Error),
    /// The state directory could not be listed.
    #[error("failed to list the rollouts: {0}")]
    ListRollouts(String),
}

/// Runs `vigil local ...` and returns the exit code.
pub fn run(args: &LocalArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("vigil local: {}", LocalError::StartRuntime(error));
            return 1;
        }
    };
    match runtime.block_on(execute(args)) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("vigil local: {error}");
            1
        }
    }
}

async fn send(admin: SocketAddr, request: reqwest::RequestBuilder) -> Result<String, LocalError> {
    let response = request
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|source| LocalError::ReachEngine { admin, source })?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|source| LocalError::ReachEngine { admin, source })?;
    if !status.is_success() {
        return Err(LocalError::Refused {
            status: status.as_u16(),
            body: body.trim_end().to_owned(),
        });
    }
    Ok(body)
}

async fn get(
    client: &reqwest::Client,
    admin: SocketAddr,
    name: &str,
) -> Result<RolloutView, LocalError> {
    let body = send(admin, client.get(format!("http://{admin}/rollouts/{name}"))).await?;
    serde_json::from_str(&body).map_err(|e| LocalError::ParseAnswer(e.to_string()))
}

async fn post(client: &reqwest::Client, admin: SocketAddr, path: &str) -> Result<(), LocalError> {
    let body = send(admin, client.post(format!("http://{admin}{path}"))).await?;
    print!("{body}");
    Ok(())
}

/// `get --watch`: the live view, redrawn on a terminal, one plain line per change otherwise;
/// keeps trying while the engine is unreachable (restarting) and says so once.
async fn watch_live(
    args: &LocalArgs,
    mut client: reqwest::Client,
    name: &str,
) -> Result<(), LocalError> {
    let admin = args.admin;
    use crate::cli::live_view::{dashboard, frame_of, new_errors, plain_line};
    use std::io::IsTerminal;
    let terminal = std::io::stdout().is_terminal();
    let mut previous: Option<RolloutView> = None;
    let mut last_line = None;
    let mut unreachable = false;
    loop {
        match get(&client, admin, name).await {
            Ok(view) => {
                let now = jiff::Timestamp::now();
                if unreachable {
                    crate::outln!(
                        "{} reconnected to vigil run at {admin}",
                        now.strftime("%H:%M:%S")
                    );
                    unreachable = false;
                }
                for line in new_errors(previous.as_ref(), &view, now) {
                    crate::outln!("{line}");
                }
                let frame = frame_of(&view, now);
                if terminal {
                    // Home and clear, then the dashboard.
                    crate::cli::write_stdout(&format!("\x1b[H\x1b[2J{}", dashboard(&frame, true)));
                } else {
                    let line = plain_line(&frame);
                    // The timestamp changes every second: compare without it.
                    let key = line.split_once(' ').map(|(_, rest)| rest.to_owned());
                    if key != last_line {
                        crate::outln!("{line}");
                        last_line = key;
                    }
                }
                previous = Some(view);
            }
            Err(LocalError::ReachEngine { .. }) if !unreachable => {
                crate::outln!(
                    "{} vigil run at {admin} is not answering; retrying until it is back (Ctrl-C to stop)",
                    jiff::Timestamp::now().strftime("%H:%M:%S")
                );
                unreachable = true;
            }
            Err(LocalError::ReachEngine { .. }) => {}
            // A restarted engine has a new token: read it again from the state directory.
            Err(LocalError::Refused { status: 401, .. }) if args.token.is_none() => {
                if let Ok(fresh) = admin_client(args) {
                    client = fresh;
                }
            }
            Err(error) => return Err(error),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// A client that sends the admin token with every request.
fn admin_client(args: &LocalArgs) -> Result<reqwest::Client, LocalError> {
    let token = match &args.token {
        Some(token) => token.trim().to_owned(),
        None => read_token(&args.state_dir).map_err(|source| LocalError::ReadToken {
            path: args.state_dir.join(ADMIN_TOKEN_FILE),
            dir: args.state_dir.display().to_string(),
            source,
        })?,
    };
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| LocalError::UseToken)?;
    value.set_sensitive(true);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        // HTTP_PROXY / ALL_PROXY would carry the token and /apply bodies through a proxy.
        .no_proxy()
        // The admin endpoint never redirects; following one could send the token elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(LocalError::BuildClient)
}

async fn execute(args: &LocalArgs) -> Result<(), LocalError> {
    if matches!(args.command, LocalCommand::List) {
        let rollouts = crate::platform::local::engine::list_rollouts(&args.state_dir)
            .map_err(|e| LocalError::ListRollouts(e.to_string()))?;
        crate::cli::write_stdout(&crate::cli::live_view::list_table(&rollouts));
        return Ok(());
    }
    let admin = args.admin;
    if !admin.ip().is_loopback() {
        return Err(LocalError::RefuseAdmin { admin });
    }
    let client = admin_client(args)?;
    match &args.command {
        LocalCommand::Get {
            name,
            watch,
            output,
        } => {
            if *watch && output != "json" {
                return watch_live(args, client, name).await;
            }
            let mut last = None;
            loop {
                let view = get(&client, admin, name).await?;
                let text = if output == "json" {
                    serde_json::to_string_pretty(&view)
                        .map_err(|e| LocalError::ParseAnswer(e.to_string()))?
                } else {
                    progress_line(&view)
                };
                if last.as_ref() != Some(&text) {
                    println!("{text}");
                    last = Some(text);
                }
                if !watch {
                    return Ok(());
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
            }
        }
        LocalCommand::Promote { name, full } => {
            if *full {
                post(&client, admin, &format!("/rollouts/{name}/promote-full")).await
            } else {
                // Send the step the user sees, so a promote that arrives after the rollout
                // moved on by itself is ignored instead of skipping a step.
                let view = get(&client, admin, name).await?;
                // Without a step the engine refuses the promote and says why.
                let path = match view.status.current_step_index {
                    Some(step) => format!("/rollouts/{name}/promote?step={step}"),
                    None => format!("/rollouts/{name}/promote"),
                };
                post(&client, admin, &path).await
            }
        }
        // Answered above from the state directory.
        LocalCommand::List => Ok(()),
        LocalCommand::Abort { name } => {
            post(&client, admin, &format!("/rollouts/{name}/abort")).await
        }
        LocalCommand::Retry { name } => {
            post(&client, admin, &format!("/rollouts/{name}/retry")).await
        }
        LocalCommand::Pause { name } => {
            post(&client, admin, &format!("/rollouts/{name}/pause")).await
        }
        LocalCommand::Resume { name } => {
            post(&client, admin, &format!("/rollouts/{name}/resume")).await
        }
        LocalCommand::Apply { file } => {
            let text = std::fs::read_to_string(file).map_err(|source| LocalError::ReadFile {
                path: file.clone(),
                source,
            })?;
            let body = send(
                admin,
                client
                    .post(format!("http://{admin}/apply"))
                    .header(reqwest::header::CONTENT_TYPE, YAML_CONTENT_TYPE)
                    .body(text),
            )
            .await?;
            println!("applied: {}", body.trim());
            Ok(())
        }
    }
}
