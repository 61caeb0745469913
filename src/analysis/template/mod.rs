//! Analysis templates without I/O: `{{args.NAME}}` placeholders, argument resolution, escaped
//! substitution into PromQL, and the validation shared by `vigil lint` and the controller.
//!
//! Validation returns every [`Problem`] it finds (never only the first), each with the path of
//! the offending field, so a user fixes a template in one pass.
//!
//! One file per concern: `args` (placeholders, argument resolution), `substitute` (escaping,
//! splicing, substitution, the shape of a query), `validate` (template checks), `cel` (checks of
//! CEL conditions), `promql` (parsing with neutral values, query traps), `suggest` ("did you
//! mean" hints). Rollout checks live in `crate::rollout::validate`, the one validator.

use std::fmt;

pub mod args;
pub mod cel;
pub mod promql;
pub mod substitute;
pub mod suggest;
pub mod validate;
mod validate_job;
pub mod web;

pub use args::{ArgRef, placeholders, resolve_args};
pub use substitute::{shape, substitute};
pub use suggest::suggest;
pub use validate::validate_template;

/// Why a placeholder could not be read, an argument resolved, or a value substituted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{{` that does not form `{{args.NAME}}`.
    #[error("parse placeholder at byte {at}: {reason}")]
    ParsePlaceholder {
        /// Byte offset of the `{{`.
        at: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A declared argument has neither a given value nor a default.
    #[error(
        "resolve argument `{name}`: it has no value; pass it from the Rollout's analysis args or give it a default `value` in the template"
    )]
    ResolveArg {
        /// The argument.
        name: String,
    },
    /// An argument's value comes from `valueFrom`, which the caller must read first.
    #[error(
        "resolve argument `{name}`: its value comes from valueFrom, which must be read (Secret or Rollout field) and passed as a value"
    )]
    ResolveArgValueFrom {
        /// The argument.
        name: String,
    },
    /// A value could not be put into the query safely.
    #[error("substitute argument `{name}`: {reason}")]
    SubstituteArg {
        /// The argument.
        name: String,
        /// Why the value was refused.
        reason: String,
    },
}

/// One thing wrong with a spec: the path of the field and what is wrong, in words.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// Path of the field, e.g. `spec.metrics[1].successCondition`.
    pub path: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl Problem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses PromQL, turning a panic of the parser into an error. promql-parser panics on some
/// inputs a template or an argument can write (`x offset Inf` converts an infinite float into
/// a `Duration`); a hostile query must be a problem in the template, never a crashed linter or
/// reconcile. The parser holds no shared state, so unwinding out of it is safe.
pub(crate) fn parse_promql(query: &str) -> Result<promql_parser::parser::Expr, String> {
    std::panic::catch_unwind(|| promql_parser::parser::parse(query)).unwrap_or_else(|_| {
        Err(
            "the PromQL parser failed on it (an infinite or NaN duration, e.g. `offset Inf`?)"
                .to_owned(),
        )
    })
}

#[cfg(test)]
mod tests;
