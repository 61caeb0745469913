//! The controller's notifications configuration: the ConfigMap `vigil-notifications` in the
//! controller's namespace (key `notifications.yaml`), with each sink's URL read from the
//! Secret key its `urlFrom.secretKeyRef` names, in that namespace too. Re-read every
//! `interval`: a change of the ConfigMap or of a Secret behind it applies within it. A
//! configuration that cannot be used keeps the one in place (a typo does not silence the
//! alerts) and says why in the log; a deleted ConfigMap stops notifications.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};
use tracing::{info, warn};

use crate::notify::config::{CONFIG_MAP_KEY, CONFIG_MAP_NAME, Platform as ConfigPlatform};
use crate::notify::{NotificationsConfig, Notifier, Outbox, SharedNotifier, SinkUrl};

/// How often the ConfigMap and its Secrets are read again, by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// Why the configuration could not be loaded. Never carries a URL.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The ConfigMap could not be read.
    #[error("failed to read ConfigMap {namespace}/{CONFIG_MAP_NAME}: {source}")]
    ReadConfigMap {
        /// The controller's namespace.
        namespace: String,
        /// Why.
        source: kube::Error,
    },
    /// The YAML under `notifications.yaml` is not a valid configuration.
    #[error("ConfigMap {namespace}/{CONFIG_MAP_NAME} key {CONFIG_MAP_KEY}: {source}")]
    ParseConfig {
        /// The controller's namespace.
        namespace: String,
        /// Why, field by field.
        source: crate::notify::config::ConfigError,
    },
    /// A Secret a sink names could not be read, or lacks the key.
    #[error("sink {sink}: failed to read Secret {namespace}/{secret} key {key}: {reason}")]
    ReadSecret {
        /// The sink.
        sink: String,
        /// The controller's namespace.
        namespace: String,
        /// The Secret.
        secret: String,
        /// The key.
        key: String,
        /// Why (never the value).
        reason: String,
    },
}

/// What one read found: the configuration and its URLs, or no ConfigMap.
type Loaded = Option<(NotificationsConfig, BTreeMap<String, SinkUrl>)>;

/// Reads the ConfigMap and the Secrets it names in `namespace`.
pub async fn load(client: &Client, namespace: &str) -> Result<Loaded, LoadError> {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let config_map = config_maps
        .get_opt(CONFIG_MAP_NAME)
        .await
        .map_err(|source| LoadError::ReadConfigMap {
            namespace: namespace.to_owned(),
            source,
        })?;
    let Some(config_map) = config_map else {
        return Ok(None);
    };
    let text = config_map
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_MAP_KEY))
        .map(String::as_str)
        .unwrap_or_default();
    let config =
        NotificationsConfig::parse(text, ConfigPlatform::Kubernetes).map_err(|source| {
            LoadError::ParseConfig {
                namespace: namespace.to_owned(),
                source,
            }
        })?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut urls = BTreeMap::new();
    for sink in &config.sinks {
        // The configuration's validation for the controller requires a secretKeyRef.
        let Some(reference) = &sink.url_from.secret_key_ref else {
            continue;
        };
        let failed = |reason: String| LoadError::ReadSecret {
            sink: sink.name.clone(),
            namespace: namespace.to_owned(),
            secret: reference.name.clone(),
            key: reference.key.clone(),
            reason,
        };
        let secret = secrets
            .get_opt(&reference.name)
            .await
            .map_err(|e| failed(e.to_string()))?
            .ok_or_else(|| failed("it does not exist".into()))?;
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&reference.key))
            .ok_or_else(|| failed("the Secret has no such key".into()))?;
        let text = std::str::from_utf8(&value.0).map_err(|_| failed("not UTF-8".into()))?;
        let url = SinkUrl::parse(text).map_err(|e| failed(e.to_string()))?;
        urls.insert(sink.name.clone(), url);
    }
    Ok(Some((config, urls)))
}

/// Loads the configuration into `shared` once, then returns the task that keeps it in step
/// with the ConfigMap in `namespace`, reading it again every `interval`. Deliveries go
/// through `outbox`. Loading first means the first reconciles already notify.
pub async fn start(
    client: Client,
    namespace: String,
    outbox: Outbox,
    shared: SharedNotifier,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    let mut reloader = Reloader {
        client,
        namespace,
        outbox,
        shared,
        in_place: None,
    };
    reloader.reload(true).await;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            reloader.reload(false).await;
        }
    })
}

struct Reloader {
    client: Client,
    namespace: String,
    outbox: Outbox,
    shared: SharedNotifier,
    in_place: Loaded,
}

impl Reloader {
    /// Reads the configuration and puts it in place when it changed (or `first`).
    async fn reload(&mut self, first: bool) {
        let configmap = format!("{}/{CONFIG_MAP_NAME}", self.namespace);
        match load(&self.client, &self.namespace).await {
            Ok(loaded) if first || loaded != self.in_place => {
                match &loaded {
                    Some((config, _)) => {
                        info!(%configmap, sinks = config.sinks.len(), "notifications configured");
                    }
                    None => info!(%configmap, "no notifications ConfigMap: notifications off"),
                }
                let outbox = &self.outbox;
                self.shared.replace(
                    loaded
                        .clone()
                        .map(|(config, urls)| Notifier::new(config, urls, outbox.clone())),
                );
                self.in_place = loaded;
            }
            Ok(_) => {}
            Err(error) => {
                warn!(%error, "notifications configuration not loaded; the one in place stays");
            }
        }
    }
}
