//! `{{args.NAME}}` placeholders and the resolution of a template's arguments.

use std::collections::BTreeMap;

use crate::api::Argument;

use super::TemplateError;

/// One `{{args.NAME}}` occurrence in a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgRef {
    /// The argument's name.
    pub name: String,
    /// Byte offset of the opening `{{`.
    pub start: usize,
    /// Byte offset just past the closing `}}`.
    pub end: usize,
}

/// Every `{{args.NAME}}` in `query`, in order. Spaces inside the braces are allowed
/// (`{{ args.NAME }}`); anything else between `{{` and `}}`, or a `{{` never closed, is an error.
pub fn placeholders(query: &str) -> Result<Vec<ArgRef>, TemplateError> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = query[from..].find("{{") {
        let start = from + offset;
        let Some(close) = query[start + 2..].find("}}") else {
            return Err(TemplateError::ParsePlaceholder {
                at: start,
                reason: "`{{` is never closed by `}}`".to_owned(),
            });
        };
        let end = start + 2 + close + 2;
        let inner = query[start + 2..end - 2].trim();
        let Some(name) = inner.strip_prefix("args.") else {
            let reason =
                crate::convert::traps::flagger_placeholder_hint(inner).unwrap_or_else(|| {
                    format!(
                        "`{}` is not a placeholder; write `{{{{args.NAME}}}}`",
                        &query[start..end]
                    )
                });
            return Err(TemplateError::ParsePlaceholder { at: start, reason });
        };
        if name.is_empty() {
            return Err(TemplateError::ParsePlaceholder {
                at: start,
                reason: format!("`{}` names no argument", &query[start..end]),
            });
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(TemplateError::ParsePlaceholder {
                at: start,
                reason: format!(
                    "`{}`: an argument name has only letters, digits, `_` and `-`",
                    &query[start..end]
                ),
            });
        }
        found.push(ArgRef {
            name: name.to_owned(),
            start,
            end,
        });
        from = end;
    }
    Ok(found)
}

/// Resolves the values of a template's declared arguments: a value in `given` (the Rollout's or
/// run's args) wins over the template's default. Arguments with `valueFrom` are read by the
/// caller (it has the Secrets and the Rollout) and passed in `given` as plain values. Given
/// arguments the template does not declare are ignored: one Rollout passes args to several
/// templates.
pub fn resolve_args(
    declared: &[Argument],
    given: &[Argument],
) -> Result<BTreeMap<String, String>, TemplateError> {
    let mut resolved = BTreeMap::new();
    for arg in declared {
        let passed = given.iter().rev().find(|g| g.name == arg.name);
        let value = match passed {
            Some(Argument {
                value: Some(value), ..
            }) => value.clone(),
            Some(Argument {
                value_from: Some(_),
                ..
            }) => {
                return Err(TemplateError::ResolveArgValueFrom {
                    name: arg.name.clone(),
                });
            }
            _ => match (&arg.value, &arg.value_from) {
                (Some(default), _) => default.clone(),
                (None, Some(_)) => {
                    return Err(TemplateError::ResolveArgValueFrom {
                        name: arg.name.clone(),
                    });
                }
                (None, None) => {
                    return Err(TemplateError::ResolveArg {
                        name: arg.name.clone(),
                    });
                }
            },
        };
        resolved.insert(arg.name.clone(), value);
    }
    Ok(resolved)
}
