//! Errors answered as Kubernetes `Status` objects.

use serde_json::{Value, json};

/// A failed request, answered as a `meta.k8s.io/v1` `Status` with this code and reason.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code (404, 409, 410, 422, ...).
    pub code: u16,
    /// The Kubernetes `StatusReason` (`NotFound`, `AlreadyExists`, `Conflict`, ...).
    pub reason: String,
    /// A human-readable message.
    pub message: String,
    /// The `details` object, if any.
    pub details: Option<Value>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// An error with a code and the reason Kubernetes uses for it.
    pub fn from_code(code: u16, message: impl Into<String>) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        Self {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::from_code(400, message)
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::from_code(422, message)
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::from_code(409, message)
    }

    pub(crate) fn gone(message: impl Into<String>) -> Self {
        Self::from_code(410, message)
    }

    pub(crate) fn not_found(resource: &str, name: &str) -> Self {
        Self::from_code(404, format!("{resource} \"{name}\" not found"))
            .with_details(resource, name)
    }

    pub(crate) fn already_exists(resource: &str, name: &str) -> Self {
        let mut e = Self::from_code(409, format!("{resource} \"{name}\" already exists"))
            .with_details(resource, name);
        e.reason = "AlreadyExists".to_string();
        e
    }

    /// The optimistic-concurrency failure of a write with a stale `resourceVersion`.
    pub(crate) fn stale(resource: &str, name: &str) -> Self {
        Self::conflict(format!(
            "Operation cannot be fulfilled on {resource} \"{name}\": the object has been \
             modified; please apply your changes to the latest version and try again"
        ))
        .with_details(resource, name)
    }

    fn with_details(mut self, resource: &str, name: &str) -> Self {
        let (kind, group) = resource.split_once('.').unwrap_or((resource, ""));
        self.details = Some(json!({"name": name, "group": group, "kind": kind}));
        self
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}
