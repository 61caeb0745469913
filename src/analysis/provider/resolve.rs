//! From a metric's `provider.prometheus` (as written in YAML) to a client configuration:
//! durations parsed, secrets read. Secrets in Kubernetes Secrets are read through
//! [`SecretReader`], so the same code serves the controller and the command line.

use std::time::Duration;

use url::Url;

use super::prometheus::{BasicAuth, PrometheusClientConfig, ResolvedAuth};
use crate::api::duration::parse_duration;
use crate::api::{PrometheusProvider, SecretSource};

/// Default timeout of one query when the metric sets none.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a provider's configuration could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The address is not a URL.
    #[error("provider.prometheus.address {address:?}: {reason}")]
    ParseAddress {
        /// The address as written.
        address: String,
        /// The parser's message.
        reason: String,
    },
    /// The timeout does not parse.
    #[error("provider.prometheus.timeout: {0}")]
    ParseTimeout(crate::api::duration::DurationError),
    /// A secret source names neither a Secret nor a file, or both.
    #[error("{field}: set exactly one of secretKeyRef and file")]
    ResolveSecretSource {
        /// The field.
        field: String,
    },
    /// Reading a secret failed.
    #[error("{field}: {reason}")]
    ReadSecret {
        /// The field.
        field: String,
        /// What went wrong (never the secret itself).
        reason: String,
    },
}

/// Largest credential file read (a token, a password, a CA bundle): anything bigger is not
/// a credential, and a bound keeps a misnamed file (a log, a device) from filling memory.
pub const MAX_CREDENTIAL_FILE_BYTES: u64 = 1024 * 1024;

/// Reads the value behind a `secretKeyRef` (the platform knows where Secrets live) or a
/// `file:` (the platform decides which files a template may name).
pub trait SecretReader {
    /// The bytes of `key` in Secret `name`.
    fn read_secret(&self, name: &str, key: &str) -> Result<Vec<u8>, String>;

    /// The bytes of the credential file at `path`. By default any file the user can read
    /// (`vigil analyze` and `vigil run` act as the user who runs them); the controller
    /// overrides this with [`read_file_under`].
    fn read_file(&self, path: &str) -> Result<Vec<u8>, String> {
        read_credential_file(std::path::Path::new(path))
    }
}

fn read_credential_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("read file {shown}: {e}"))?;
    let metadata = file
        .metadata()
        .map_err(|e| format!("read file {shown}: {e}"))?;
    if !metadata.is_file() {
        return Err(format!("read file {shown}: not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CREDENTIAL_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("read file {shown}: {e}"))?;
    if bytes.len() as u64 > MAX_CREDENTIAL_FILE_BYTES {
        return Err(format!(
            "read file {shown}: larger than {MAX_CREDENTIAL_FILE_BYTES} bytes"
        ));
    }
    Ok(bytes)
}

/// Reads the credential file `path` only when, with every symlink and `..` resolved, it lies
/// under one of `dirs` (already canonical): the controller's `--credential-dir`. With no
/// directory every file is refused, so a template can never make the controller read (and
/// send to the template's address) its own service-account token or any other file.
pub fn read_file_under(dirs: &[std::path::PathBuf], path: &str) -> Result<Vec<u8>, String> {
    if dirs.is_empty() {
        return Err(format!(
            "file {path:?} refused: the controller reads credential files only under a \
             directory named with --credential-dir (none is set); use a secretKeyRef to a \
             Secret labelled {ANALYSIS_CREDENTIAL_LABEL}=true instead"
        ));
    }
    let canonical = std::fs::canonicalize(path).map_err(|e| format!("read file {path}: {e}"))?;
    if !dirs.iter().any(|dir| canonical.starts_with(dir)) {
        let allowed: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(format!(
            "file {path:?} refused: it is not under a --credential-dir ({})",
            allowed.join(", ")
        ));
    }
    read_credential_file(&canonical)
}

/// The label a Secret must carry (with the value `"true"`) before an analysis may read it:
/// writers of templates, Rollouts and AnalysisRuns can otherwise name any Secret of their
/// namespace and have the controller send it to an address they choose.
pub const ANALYSIS_CREDENTIAL_LABEL: &str = "vigil.dev/analysis-credential";

/// A reader for places with no Kubernetes Secrets (the command line, the local platform).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSecrets;

impl SecretReader for NoSecrets {
    fn read_secret(&self, name: &str, _key: &str) -> Result<Vec<u8>, String> {
        Err(format!(
            "secretKeyRef {name:?} needs a cluster; outside one, put the value in a file and use `file:`"
        ))
    }
}

fn read_source(
    field: &str,
    source: &SecretSource,
    secrets: &dyn SecretReader,
) -> Result<Vec<u8>, ResolveError> {
    let read_error = |reason: String| ResolveError::ReadSecret {
        field: field.to_owned(),
        reason,
    };
    match (&source.secret_key_ref, &source.file) {
        (Some(selector), None) => secrets
            .read_secret(&selector.name, &selector.key)
            .map_err(read_error),
        (None, Some(path)) => secrets.read_file(path).map_err(read_error),
        _ => Err(ResolveError::ResolveSecretSource {
            field: field.to_owned(),
        }),
    }
}

fn read_text(
    field: &str,
    source: &SecretSource,
    secrets: &dyn SecretReader,
) -> Result<String, ResolveError> {
    let bytes = read_source(field, source, secrets)?;
    String::from_utf8(bytes)
        .map(|text| text.trim_end_matches(['\n', '\r']).to_owned())
        .map_err(|_| ResolveError::ReadSecret {
            field: field.to_owned(),
            reason: "value is not UTF-8 text".to_owned(),
        })
}

/// Builds the client configuration of a metric's provider. `address_override` replaces the
/// templated address (`vigil analyze --prometheus`).
pub fn client_config(
    provider: &PrometheusProvider,
    address_override: Option<&Url>,
    secrets: &dyn SecretReader,
) -> Result<PrometheusClientConfig, ResolveError> {
    let address = match address_override {
        Some(url) => url.clone(),
        None => Url::parse(&provider.address).map_err(|e| ResolveError::ParseAddress {
            address: provider.address.clone(),
            reason: e.to_string(),
        })?,
    };
    let mut config = PrometheusClientConfig::new(address);
    config.timeout = match provider.timeout.as_deref() {
        Some(text) => parse_duration(text).map_err(ResolveError::ParseTimeout)?,
        None => DEFAULT_QUERY_TIMEOUT,
    };
    if let Some(auth) = &provider.auth {
        let mut resolved = ResolvedAuth::default();
        if let Some(token) = &auth.bearer_token {
            resolved.bearer_token = Some(read_text(
                "provider.prometheus.auth.bearerToken",
                token,
                secrets,
            )?);
        }
        if let Some(basic) = &auth.basic {
            resolved.basic = Some(BasicAuth {
                username: basic.username.clone(),
                password: read_text(
                    "provider.prometheus.auth.basic.password",
                    &basic.password,
                    secrets,
                )?,
            });
        }
        for (i, header) in auth.headers.iter().enumerate() {
            let field = format!("provider.prometheus.auth.headers[{i}]");
            let value = match (&header.value, &header.value_from) {
                (Some(value), None) => value.clone(),
                (None, Some(source)) => read_text(&field, source, secrets)?,
                _ => {
                    return Err(ResolveError::ResolveSecretSource {
                        field: format!("{field} ({}): value or valueFrom", header.name),
                    });
                }
            };
            resolved.headers.push((header.name.clone(), value));
        }
        if let Some(ca) = &auth.ca_bundle {
            resolved.ca_bundle_pem = Some(read_source(
                "provider.prometheus.auth.caBundle",
                ca,
                secrets,
            )?);
        }
        config.auth = resolved;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{HeaderSource, PrometheusAuth, SecretKeySelector};

    #[test]
    fn reads_file_secrets_and_rejects_cluster_secrets_outside_a_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token_path = dir.path().join("token");
        std::fs::write(&token_path, "s3cret\n").expect("write");
        let provider = PrometheusProvider {
            address: "http://prometheus:9090".to_owned(),
            timeout: Some("3s".to_owned()),
            auth: Some(PrometheusAuth {
                bearer_token: Some(SecretSource {
                    file: Some(token_path.display().to_string()),
                    secret_key_ref: None,
                }),
                headers: vec![HeaderSource {
                    name: "X-Scope-OrgID".to_owned(),
                    value: Some("tenant-a".to_owned()),
                    value_from: None,
                }],
                ..PrometheusAuth::default()
            }),
            ..PrometheusProvider::default()
        };
        let config = client_config(&provider, None, &NoSecrets).expect("resolves");
        assert_eq!(config.timeout, Duration::from_secs(3));
        assert_eq!(config.auth.bearer_token.as_deref(), Some("s3cret"));
        assert_eq!(
            config.auth.headers,
            [("X-Scope-OrgID".to_owned(), "tenant-a".to_owned())]
        );

        let mut in_cluster = provider.clone();
        in_cluster.auth = Some(PrometheusAuth {
            bearer_token: Some(SecretSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: "prom".to_owned(),
                    key: "token".to_owned(),
                }),
                file: None,
            }),
            ..PrometheusAuth::default()
        });
        let error = client_config(&in_cluster, None, &NoSecrets).expect_err("no cluster");
        assert!(
            error.to_string().starts_with(
                "provider.prometheus.auth.bearerToken: secretKeyRef \"prom\" needs a cluster"
            ),
            "{error}"
        );
    }

    #[test]
    fn bad_address_and_timeout_name_the_field() {
        let provider = PrometheusProvider {
            address: "not a url".to_owned(),
            ..PrometheusProvider::default()
        };
        let error = client_config(&provider, None, &NoSecrets).expect_err("bad address");
        assert!(
            error
                .to_string()
                .starts_with("provider.prometheus.address \"not a url\""),
            "{error}"
        );
        let provider = PrometheusProvider {
            address: "http://p:9090".to_owned(),
            timeout: Some("10".to_owned()),
            ..PrometheusProvider::default()
        };
        let error = client_config(&provider, None, &NoSecrets).expect_err("bad timeout");
        assert!(
            error
                .to_string()
                .starts_with("provider.prometheus.timeout:"),
            "{error}"
        );
    }
}
