//! From a metric's `provider.prometheus` (as written in YAML) to a client configuration:
//! durations parsed, secrets read. Secrets in Kubernetes Secrets are read through
//! [`SecretReader`], so the same code serves the controller and the command line.

use std::time::Duration;

use url::Url;

use super::prometheus::{BasicAuth, PrometheusClientConfig, ResolvedAuth};
use super::web::{WebBody, WebClientConfig};
use crate::api::duration::MAX_QUERY_TIMEOUT;
use crate::api::duration::parse_duration;
use crate::api::{PrometheusAuth, PrometheusProvider, SecretSource, WebProvider};

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
    /// The metric names no address and there is no default to apply.
    #[error(
        "provider.prometheus.address: not set, and no default Prometheus was given (set the \
         address, or give one: `vigil controller --prometheus URL` or VIGIL_PROMETHEUS; \
         `--prometheus URL` for `vigil analyze` and `vigil run`)"
    )]
    MissingAddress,
    /// The timeout does not parse.
    #[error("provider.prometheus.timeout: {0}")]
    ParseTimeout(crate::api::duration::DurationError),
    /// A web metric's URL is not an http(s) URL with a host.
    #[error("provider.web.url {url:?}: {reason}")]
    ParseWebUrl {
        /// The URL as written (bounded).
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A web metric's `timeoutSeconds` is out of range.
    #[error("provider.web.timeoutSeconds: {seconds} is not in 1..={ceiling}")]
    WebTimeoutOutOfRange {
        /// The value written.
        seconds: i64,
        /// The ceiling (MAX_QUERY_TIMEOUT in seconds).
        ceiling: u64,
    },
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

/// The Prometheus given on the command line, and how it combines with a metric's `address`:
/// the one rule for the controller, `vigil analyze` and `vigil run`, applied where a run's
/// clients are built and where its Secret arguments' destinations are checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CommandLinePrometheus {
    /// None given: every metric must name its address.
    #[default]
    None,
    /// For the metrics that name no address (`vigil controller --prometheus`, as Flagger's
    /// `-metrics-server`); a metric's own address still wins. Configured by the operator, it
    /// is no credential origin of its own: credentials reach it only where it is listed, like
    /// any address.
    Default(Url),
    /// For every metric, replacing its address (`vigil analyze --prometheus`, `vigil run
    /// --prometheus`: the user who runs them points templates at a server of their choice).
    Override(Url),
}

impl CommandLinePrometheus {
    /// The address `provider`'s queries go to.
    pub fn address_of(&self, provider: &PrometheusProvider) -> Result<Url, ResolveError> {
        match (self, provider.address.as_deref()) {
            (CommandLinePrometheus::Override(url), _) => Ok(url.clone()),
            (_, Some(address)) => Url::parse(address).map_err(|e| ResolveError::ParseAddress {
                address: crate::analysis::provider::bounded(address).into_owned(),
                reason: e.to_string(),
            }),
            (CommandLinePrometheus::Default(url), None) => Ok(url.clone()),
            (CommandLinePrometheus::None, None) => Err(ResolveError::MissingAddress),
        }
    }

    /// Whether `provider`'s queries go to the command line's address (the operator's default
    /// for a metric naming none, or the user's override) rather than one the metric wrote.
    pub fn chooses_address_of(&self, provider: &PrometheusProvider) -> bool {
        match (self, provider.address.as_deref()) {
            (CommandLinePrometheus::Override(_), _) => true,
            (CommandLinePrometheus::Default(_), None) => true,
            (CommandLinePrometheus::Default(_) | CommandLinePrometheus::None, _) => false,
        }
    }

    /// Parses a `--prometheus` value: an `http://` or `https://` URL with a host (what a
    /// credential origin needs), without a query or fragment (the API paths are joined
    /// below it).
    pub fn parse_url(text: &str) -> Result<Url, String> {
        let url = Url::parse(text.trim()).map_err(|e| format!("{e}"))?;
        Origin::of(&url)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err("a Prometheus base URL has no query or fragment".to_owned());
        }
        Ok(url)
    }
}

/// Largest credential file read (a token, a password, a CA bundle): anything bigger is not
/// a credential, and a bound keeps a misnamed file (a log, a device) from filling memory.
pub const MAX_CREDENTIAL_FILE_BYTES: u64 = 1024 * 1024;

/// Where a credential is about to be sent: scheme, lowercase host and port (the scheme's
/// default when the URL names none). Two URLs that reach the same server compare equal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

impl Origin {
    /// The origin `url` reaches; only `http` and `https` URLs with a host have one.
    pub fn of(url: &Url) -> Result<Origin, String> {
        let scheme = url.scheme().to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!("scheme {scheme:?} is not http or https"));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the URL names no host")?
            .to_ascii_lowercase();
        let port = url.port_or_known_default().ok_or("the URL names no port")?;
        Ok(Origin { scheme, host, port })
    }

    /// An origin as an operator lists it: `scheme://host[:port]`, with nothing after the
    /// authority but an optional `/`.
    pub fn parse_listed(text: &str) -> Result<Origin, String> {
        let text = text.trim();
        let shown = crate::analysis::provider::bounded(text);
        let url = Url::parse(text).map_err(|e| format!("origin {shown:?}: {e}"))?;
        let bare = url.username().is_empty()
            && url.password().is_none()
            && matches!(url.path(), "" | "/")
            && url.query().is_none()
            && url.fragment().is_none();
        if !bare {
            return Err(format!(
                "origin {shown:?}: write only scheme://host:port (no user, path, query or fragment)"
            ));
        }
        Origin::of(&url).map_err(|e| format!("origin {shown:?}: {e}"))
    }

    /// Whether the credential would travel in clear text.
    pub fn is_plain_http(&self) -> bool {
        self.scheme == "http"
    }
}

/// Parses a comma-separated list of origins (the Secret annotation
/// [`ANALYSIS_CREDENTIAL_ORIGINS_ANNOTATION`]); empty entries are skipped.
pub fn parse_origin_list(text: &str) -> Result<Vec<Origin>, String> {
    text.split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(Origin::parse_listed)
        .collect()
}

/// `Ok` when `origin` is one of `allowed`; otherwise why not, naming `credential` (what is
/// being sent), the origin asked for and `how_to_allow` (the annotation or flag to extend).
pub fn check_origin(
    allowed: &[Origin],
    origin: &Origin,
    credential: &str,
    how_to_allow: &str,
) -> Result<(), String> {
    if allowed.contains(origin) {
        return Ok(());
    }
    let listed: Vec<String> = allowed.iter().map(Origin::to_string).collect();
    let listed = if listed.is_empty() {
        "none".to_owned()
    } else {
        listed.join(", ")
    };
    let clear_text = if origin.is_plain_http() {
        " (plain http would send it in clear text: list the http:// origin explicitly to allow that)"
    } else {
        ""
    };
    Err(format!(
        "{credential} may not be sent to {origin}: {how_to_allow} does not list that origin \
         (listed: {}){clear_text}",
        crate::analysis::provider::bounded(&listed)
    ))
}

/// Reads the value behind a `secretKeyRef` (the platform knows where Secrets live) or a
/// `file:` (the platform decides which files a template may name), for sending to `origin`:
/// the platform decides which credential may go where.
pub trait SecretReader {
    /// The bytes of `key` in Secret `name`, if that Secret may be sent to `origin`.
    fn read_secret(&self, name: &str, key: &str, origin: &Origin) -> Result<Vec<u8>, String>;

    /// The bytes of the credential file at `path`, if it may be sent to `origin`. By default
    /// any file the user can read, to any origin (`vigil analyze` and `vigil run` act as the
    /// user who runs them, who names both); the controller overrides this.
    fn read_file(&self, path: &str, _origin: &Origin) -> Result<Vec<u8>, String> {
        read_credential_file(std::path::Path::new(path))
    }
}

/// Reads a regular file of at most [`MAX_CREDENTIAL_FILE_BYTES`]. The type is checked before
/// the file is opened (a FIFO would block `open`), and the file is opened non-blocking too,
/// so one swapped in between cannot block either.
fn read_credential_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let shown = path.display();
    let not_regular = || format!("read file {shown}: not a regular file");
    let metadata = std::fs::metadata(path).map_err(|e| format!("read file {shown}: {e}"))?;
    if !metadata.is_file() {
        return Err(not_regular());
    }
    /// `O_NONBLOCK` on Linux and the BSDs alike.
    const O_NONBLOCK: i32 = if cfg!(target_os = "linux") {
        0o4000
    } else {
        0x0004
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("read file {shown}: {e}"))?;
    let metadata = file
        .metadata()
        .map_err(|e| format!("read file {shown}: {e}"))?;
    if !metadata.is_file() {
        return Err(not_regular());
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

/// `path` with `.` and `..` resolved by its text alone (no filesystem access); `None` for a
/// relative path.
fn lexically_normal(path: &std::path::Path) -> Option<std::path::PathBuf> {
    use std::path::Component;
    if !path.is_absolute() {
        return None;
    }
    let mut normal = std::path::PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                normal.pop();
            }
            Component::CurDir => {}
            other => normal.push(other.as_os_str()),
        }
    }
    Some(normal)
}

/// Reads the credential file `path` only when it lies under one of `dirs` (already
/// canonical): the controller's `--credential-dir`. The path is first checked by its text
/// (`..` resolved) and only then looked at on disk, where, with every symlink resolved, it
/// must still lie under a directory. A path outside, one that does not exist and one that
/// cannot be resolved get the same refusal, so a template writer cannot probe the
/// controller's filesystem. With no directory every file is refused, so a template can never
/// make the controller read its own service-account token or any other file.
pub fn read_file_under(dirs: &[std::path::PathBuf], path: &str) -> Result<Vec<u8>, String> {
    let shown = crate::analysis::provider::bounded(path);
    if dirs.is_empty() {
        return Err(format!(
            "file {shown:?} refused: the controller reads credential files only under a \
             directory named with --credential-dir (none is set); use a secretKeyRef to a \
             Secret labelled {ANALYSIS_CREDENTIAL_LABEL}=true instead"
        ));
    }
    let under_a_dir = |p: &std::path::Path| dirs.iter().any(|dir| p.starts_with(dir));
    let refused = || {
        let allowed: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        format!(
            "file {shown:?} refused: it is not an existing file under a --credential-dir ({})",
            allowed.join(", ")
        )
    };
    let lexical = lexically_normal(std::path::Path::new(path)).ok_or_else(refused)?;
    if !under_a_dir(&lexical) {
        return Err(refused());
    }
    let canonical = std::fs::canonicalize(&lexical).map_err(|_| refused())?;
    if !under_a_dir(&canonical) {
        return Err(refused());
    }
    read_credential_file(&canonical)
}

/// The label a Secret must carry (with the value `"true"`) before an analysis may read it:
/// writers of templates, Rollouts and AnalysisRuns can otherwise name any Secret of their
/// namespace and have the controller send it to an address they choose.
pub const ANALYSIS_CREDENTIAL_LABEL: &str = "vigil.dev/analysis-credential";

/// The annotation listing (comma-separated `scheme://host:port`) the only origins a Secret's
/// values may be sent to, as provider credentials or inside queries: without it, an opted-in
/// Secret would go to whatever address a run's writer names.
pub const ANALYSIS_CREDENTIAL_ORIGINS_ANNOTATION: &str = "vigil.dev/analysis-credential-origins";

/// A reader for places with no Kubernetes Secrets (the command line, the local platform).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSecrets;

impl SecretReader for NoSecrets {
    fn read_secret(&self, name: &str, _key: &str, _origin: &Origin) -> Result<Vec<u8>, String> {
        Err(format!(
            "secretKeyRef {name:?} needs a cluster; outside one, put the value in a file and use `file:`"
        ))
    }
}

fn read_source(
    field: &str,
    source: &SecretSource,
    origin: &Origin,
    secrets: &dyn SecretReader,
) -> Result<Vec<u8>, ResolveError> {
    let read_error = |reason: String| ResolveError::ReadSecret {
        field: field.to_owned(),
        reason,
    };
    match (&source.secret_key_ref, &source.file) {
        (Some(selector), None) => secrets
            .read_secret(&selector.name, &selector.key, origin)
            .map_err(read_error),
        (None, Some(path)) => secrets.read_file(path, origin).map_err(read_error),
        _ => Err(ResolveError::ResolveSecretSource {
            field: field.to_owned(),
        }),
    }
}

fn read_text(
    field: &str,
    source: &SecretSource,
    origin: &Origin,
    secrets: &dyn SecretReader,
) -> Result<String, ResolveError> {
    let bytes = read_source(field, source, origin, secrets)?;
    String::from_utf8(bytes)
        .map(|text| text.trim_end_matches(['\n', '\r']).to_owned())
        .map_err(|_| ResolveError::ReadSecret {
            field: field.to_owned(),
            reason: "value is not UTF-8 text".to_owned(),
        })
}

/// Builds the client configuration of a metric's provider, its address chosen by
/// `prometheus` ([`CommandLinePrometheus::address_of`]).
pub fn client_config(
    provider: &PrometheusProvider,
    prometheus: &CommandLinePrometheus,
    secrets: &dyn SecretReader,
) -> Result<PrometheusClientConfig, ResolveError> {
    let address = prometheus.address_of(provider)?;
    let mut config = PrometheusClientConfig::new(address.clone());
    config.command_line_address = prometheus.chooses_address_of(provider);
    config.timeout = match provider.timeout.as_deref() {
        Some(text) => parse_duration(text).map_err(ResolveError::ParseTimeout)?,
        None => DEFAULT_QUERY_TIMEOUT,
    };
    if let Some(auth) = &provider.auth {
        let origin = Origin::of(&address).map_err(|reason| ResolveError::ParseAddress {
            address: crate::analysis::provider::bounded(address.as_str()).into_owned(),
            reason,
        })?;
        config.auth = resolve_auth(auth, "provider.prometheus.auth", &origin, secrets)?;
    }
    Ok(config)
}

/// The URL of a web metric, checked to reach an origin (an http(s) URL with a host).
pub fn web_origin_url(url: &str) -> Result<Url, ResolveError> {
    let invalid = |reason: String| ResolveError::ParseWebUrl {
        url: crate::analysis::provider::bounded(url).into_owned(),
        reason,
    };
    let resolved = crate::analysis::template::web::resolve_time(url, jiff::Timestamp::UNIX_EPOCH)
        .map_err(invalid)?;
    let parsed = Url::parse(&resolved).map_err(|e| invalid(e.to_string()))?;
    Origin::of(&parsed).map_err(invalid)?;
    Ok(parsed)
}

/// Why `insecure: true` and a Secret credential do not go together.
pub const INSECURE_WITH_SECRET: &str = "a Secret credential is never sent without TLS verification: \
     the template's writer, not the Secret's owner, would be turning it off; remove \
     `insecure`, and give the server's CA with auth.caBundle";

/// Whether `auth` reads a value from a Kubernetes Secret (`secretKeyRef`).
pub fn reads_a_secret(auth: &PrometheusAuth) -> bool {
    let from_secret = |source: &SecretSource| source.secret_key_ref.is_some();
    auth.bearer_token.as_ref().is_some_and(from_secret)
        || auth
            .basic
            .as_ref()
            .is_some_and(|b| from_secret(&b.password))
        || auth
            .headers
            .iter()
            .any(|h| h.value_from.as_ref().is_some_and(from_secret))
}

/// Builds the client configuration of a web metric (its arguments already substituted):
/// credentials read for the URL's origin, timeout within [`MAX_QUERY_TIMEOUT`].
pub fn web_client_config(
    web: &WebProvider,
    secrets: &dyn SecretReader,
) -> Result<WebClientConfig, ResolveError> {
    let url = web_origin_url(&web.url)?;
    let mut config = WebClientConfig::new(web.url.clone());
    config.method = web.method.unwrap_or_default();
    config.headers = web
        .headers
        .iter()
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    config.body = match (&web.body, &web.json_body) {
        (Some(text), _) => Some(WebBody::Text(text.clone())),
        (None, Some(json)) => Some(WebBody::Json(json.clone())),
        (None, None) => None,
    };
    config.json_path = web.json_path.clone();
    config.insecure = web.insecure;
    if let Some(seconds) = web.timeout_seconds {
        let ceiling = MAX_QUERY_TIMEOUT.as_secs();
        config.timeout = u64::try_from(seconds)
            .ok()
            .filter(|s| (1..=ceiling).contains(s))
            .map(Duration::from_secs)
            .ok_or(ResolveError::WebTimeoutOutOfRange { seconds, ceiling })?;
    }
    if let Some(auth) = &web.auth {
        if web.insecure && reads_a_secret(auth) {
            return Err(ResolveError::ReadSecret {
                field: "provider.web.insecure".to_owned(),
                reason: INSECURE_WITH_SECRET.to_owned(),
            });
        }
        // `web_origin_url` checked the origin: this cannot fail.
        let origin = Origin::of(&url).map_err(|reason| ResolveError::ParseWebUrl {
            url: crate::analysis::provider::bounded(url.as_str()).into_owned(),
            reason,
        })?;
        config.auth = resolve_auth(auth, "provider.web.auth", &origin, secrets)?;
    }
    Ok(config)
}

/// Reads the credentials of `auth` (the field at `field`, e.g. `provider.web.auth`) for
/// sending to `origin`: the one way every provider's credentials are read.
pub fn resolve_auth(
    auth: &PrometheusAuth,
    field: &str,
    origin: &Origin,
    secrets: &dyn SecretReader,
) -> Result<ResolvedAuth, ResolveError> {
    let mut resolved = ResolvedAuth::default();
    if let Some(token) = &auth.bearer_token {
        resolved.bearer_token = Some(read_text(
            &format!("{field}.bearerToken"),
            token,
            origin,
            secrets,
        )?);
    }
    if let Some(basic) = &auth.basic {
        resolved.basic = Some(BasicAuth {
            username: basic.username.clone(),
            password: read_text(
                &format!("{field}.basic.password"),
                &basic.password,
                origin,
                secrets,
            )?,
        });
    }
    for (i, header) in auth.headers.iter().enumerate() {
        let header_field = format!("{field}.headers[{i}]");
        let value = match (&header.value, &header.value_from) {
            (Some(value), None) => value.clone(),
            (None, Some(source)) => read_text(&header_field, source, origin, secrets)?,
            _ => {
                return Err(ResolveError::ResolveSecretSource {
                    field: format!("{header_field} ({}): value or valueFrom", header.name),
                });
            }
        };
        resolved.headers.push((header.name.clone(), value));
    }
    if let Some(ca) = &auth.ca_bundle {
        resolved.ca_bundle_pem = Some(read_source(
            &format!("{field}.caBundle"),
            ca,
            origin,
            secrets,
        )?);
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{HeaderSource, SecretKeySelector};

    #[test]
    fn reads_file_secrets_and_rejects_cluster_secrets_outside_a_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token_path = dir.path().join("token");
        std::fs::write(&token_path, "s3cret\n").expect("write");
        let provider = PrometheusProvider {
            address: Some("http://prometheus:9090".to_owned()),
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
        let config =
            client_config(&provider, &CommandLinePrometheus::None, &NoSecrets).expect("resolves");
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
        let error = client_config(&in_cluster, &CommandLinePrometheus::None, &NoSecrets)
            .expect_err("no cluster");
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
            address: Some("not a url".to_owned()),
            ..PrometheusProvider::default()
        };
        let error = client_config(&provider, &CommandLinePrometheus::None, &NoSecrets)
            .expect_err("bad address");
        assert!(
            error
                .to_string()
                .starts_with("provider.prometheus.address \"not a url\""),
            "{error}"
        );
        let provider = PrometheusProvider {
            address: Some("http://p:9090".to_owned()),
            timeout: Some("10".to_owned()),
            ..PrometheusProvider::default()
        };
        let error = client_config(&provider, &CommandLinePrometheus::None, &NoSecrets)
            .expect_err("bad timeout");
        assert!(
            error
                .to_string()
                .starts_with("provider.prometheus.timeout:"),
            "{error}"
        );
    }

    #[test]
    fn a_metric_without_an_address_takes_the_default_and_its_own_address_wins_over_it() {
        let url = |text: &str| Url::parse(text).expect("url");
        let named = PrometheusProvider {
            address: Some("http://team-prometheus:9090".to_owned()),
            ..PrometheusProvider::default()
        };
        let unnamed = PrometheusProvider::default();
        let default = CommandLinePrometheus::Default(url("http://prometheus.monitoring:9090"));
        let override_ = CommandLinePrometheus::Override(url("http://127.0.0.1:9090"));
        let address = |rule: &CommandLinePrometheus, provider| {
            rule.address_of(provider).map(|u| u.to_string())
        };
        assert_eq!(
            address(&default, &named).expect("own"),
            "http://team-prometheus:9090/"
        );
        assert_eq!(
            address(&default, &unnamed).expect("default"),
            "http://prometheus.monitoring:9090/"
        );
        for provider in [&named, &unnamed] {
            assert_eq!(
                address(&override_, provider).expect("override"),
                "http://127.0.0.1:9090/"
            );
        }
        let error = CommandLinePrometheus::None
            .address_of(&unnamed)
            .expect_err("no address anywhere");
        assert!(matches!(error, ResolveError::MissingAddress));
        let text = error.to_string();
        assert!(
            text.starts_with("provider.prometheus.address: not set")
                && text.contains("--prometheus"),
            "{text}"
        );
    }

    #[test]
    fn a_command_line_prometheus_is_an_http_url_with_a_host() {
        for good in [
            "http://prometheus.monitoring:9090",
            "https://thanos/prefix/",
        ] {
            assert!(CommandLinePrometheus::parse_url(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("prometheus:9090", "scheme"),
            ("ftp://p", "scheme"),
            ("http://p:9090/?x=1", "query"),
            ("not a url", "relative URL"),
        ] {
            let error = CommandLinePrometheus::parse_url(bad).expect_err(bad);
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}
