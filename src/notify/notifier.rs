//! Who hears what: a configuration with its URLs resolved, and the outbox. Both platforms
//! hand it the transitions of a decision whose status was recorded (see
//! `platform::reconcile`); it picks the sinks subscribed (the configuration's defaults plus
//! the Rollout's annotations), shapes a body for each and queues it. It never waits.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use tracing::warn;

use super::config::{NotificationsConfig, SinkKind, annotation_subscriptions};
use super::message::{Message, RolloutRef, Transition, body};
use super::outbox::{Delivery, Outbox, OutboxError, SinkUrl};

/// Bytes of a file holding a sink's URL, at most.
pub const MAX_URL_FILE_BYTES: u64 = 8 * 1024;

/// Why a sink's URL could not be had. The URL is never part of the error.
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    /// The file `urlFrom.file` names could not be read.
    #[error("sink {sink}: failed to read the URL from {path}: {source}")]
    ReadUrlFile {
        /// The sink.
        sink: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The variable `urlFrom.env` names is not set (or not Unicode).
    #[error("sink {sink}: the environment variable {var} is not set")]
    ReadUrlEnv {
        /// The sink.
        sink: String,
        /// The variable.
        var: String,
    },
    /// The sink's `urlFrom` names no source this platform reads.
    #[error("sink {sink}: urlFrom names no source this platform reads")]
    FindUrlSource {
        /// The sink.
        sink: String,
    },
    /// What was read is not an http(s) URL.
    #[error("sink {sink}: {source}")]
    UseUrl {
        /// The sink.
        sink: String,
        /// Why (without the URL).
        source: OutboxError,
    },
}

/// A configuration whose URLs are resolved, and the outbox it queues on.
#[derive(Debug)]
pub struct Notifier {
    config: NotificationsConfig,
    sinks: BTreeMap<String, (SinkKind, SinkUrl)>,
    outbox: Outbox,
}

impl Notifier {
    /// `config` with the URL of each of its sinks (`urls`, by sink name; a sink without one
    /// is skipped with a warning when it is due).
    pub fn new(
        config: NotificationsConfig,
        mut urls: BTreeMap<String, SinkUrl>,
        outbox: Outbox,
    ) -> Notifier {
        let sinks = config
            .sinks
            .iter()
            .filter_map(|s| Some((s.name.clone(), (s.kind, urls.remove(&s.name)?))))
            .collect();
        Notifier {
            config,
            sinks,
            outbox,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &NotificationsConfig {
        &self.config
    }

    /// The counters of its outbox.
    pub fn metrics(&self) -> &super::outbox::NotificationMetrics {
        self.outbox.metrics()
    }

    /// Queues a message for every sink subscribed to each of `transitions` of `rollout`: the
    /// configuration's subscriptions plus those of its `annotations` (sink names only).
    pub fn notify<'a>(
        &self,
        rollout: RolloutRef,
        annotations: impl IntoIterator<Item = (&'a str, &'a str)>,
        transitions: &[Transition],
    ) {
        if transitions.is_empty() {
            return;
        }
        let (mut subscriptions, problems) = annotation_subscriptions(annotations, &self.config);
        for problem in problems {
            warn!(rollout = %rollout.display(), path = %problem.path, problem = %problem.message, "notification annotation ignored");
        }
        for (trigger, sinks) in &self.config.subscriptions {
            let wanted = subscriptions.entry(*trigger).or_default();
            for sink in sinks {
                if !wanted.contains(sink) {
                    wanted.push(sink.clone());
                }
            }
        }
        for transition in transitions {
            let Some(sinks) = subscriptions.get(&transition.trigger) else {
                continue;
            };
            let dedupe_key = Message::of(rollout, transition).dedupe_key;
            for name in sinks {
                let Some((kind, url)) = self.sinks.get(name) else {
                    warn!(sink = %name, "notification sink has no URL; skipped");
                    continue;
                };
                self.outbox.enqueue(Delivery {
                    sink: name.clone(),
                    url: url.clone(),
                    body: body(*kind, rollout, transition),
                    dedupe_key: dedupe_key.clone(),
                });
            }
        }
    }
}

/// The URLs of `config`'s sinks for `vigil run`: from the file or the environment variable
/// each names.
pub fn resolve_local_urls(
    config: &NotificationsConfig,
) -> Result<BTreeMap<String, SinkUrl>, NotifierError> {
    let mut urls = BTreeMap::new();
    for sink in &config.sinks {
        let text = if let Some(path) = &sink.url_from.file {
            read_url_file(path).map_err(|source| NotifierError::ReadUrlFile {
                sink: sink.name.clone(),
                path: path.clone(),
                source,
            })?
        } else if let Some(var) = &sink.url_from.env {
            std::env::var(var).map_err(|_| NotifierError::ReadUrlEnv {
                sink: sink.name.clone(),
                var: var.clone(),
            })?
        } else {
            return Err(NotifierError::FindUrlSource {
                sink: sink.name.clone(),
            });
        };
        let url = SinkUrl::parse(&text).map_err(|source| NotifierError::UseUrl {
            sink: sink.name.clone(),
            source,
        })?;
        urls.insert(sink.name.clone(), url);
    }
    Ok(urls)
}

fn read_url_file(path: &std::path::Path) -> std::io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_URL_FILE_BYTES)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// A [`Notifier`] that a reload may replace while reconciles use it; none until one is set.
#[derive(Clone, Debug, Default)]
pub struct SharedNotifier(Arc<RwLock<Option<Arc<Notifier>>>>);

impl SharedNotifier {
    /// Puts `notifier` in place (or none).
    pub fn replace(&self, notifier: Option<Notifier>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = notifier.map(Arc::new);
    }

    /// The notifier in place, if any.
    pub fn current(&self) -> Option<Arc<Notifier>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// [`Notifier::notify`] with the notifier in place; nothing without one.
    pub fn notify<'a>(
        &self,
        rollout: RolloutRef,
        annotations: impl IntoIterator<Item = (&'a str, &'a str)>,
        transitions: &[Transition],
    ) {
        if let Some(notifier) = self.current() {
            notifier.notify(rollout, annotations, transitions);
        }
    }
}
