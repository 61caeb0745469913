//! The rules of `trafficRouting.managedRoutes` and of the `setHeaderRoute` /
//! `setMirrorRoute` steps, part of [`validate_spec`](super::validate_spec): names listed and
//! well formed, matches bounded, regular expressions compiled (with a bounded size), and a
//! router that can do what the step asks.

use std::collections::BTreeSet;

use crate::api::{CanaryStep, RolloutSpec, SetHeaderRoute, SetMirrorRoute, StringMatch};
use crate::traffic::{Capability, RouterKind};

use super::SpecProblem;

/// Most routes `trafficRouting.managedRoutes` may list (each is a rule on the router object).
pub const MAX_MANAGED_ROUTES: usize = 16;
/// Longest managed route name (a DNS label, as Gateway API rule names are).
pub const MAX_ROUTE_NAME_LEN: usize = 63;
/// Most entries in one step's `match` (header conditions, or mirror alternatives).
pub const MAX_ROUTE_MATCHES: usize = 16;
/// Most headers one `setMirrorRoute` match entry names.
pub const MAX_MATCH_HEADERS: usize = 16;
/// Longest header name in a match (Gateway API's own bound).
pub const MAX_HEADER_NAME_LEN: usize = 256;
/// Longest `exact` or `prefix` value in a match (Gateway API's bound on header values).
pub const MAX_MATCH_VALUE_LEN: usize = 4096;
/// Longest `regex` in a match, in bytes.
pub const MAX_MATCH_REGEX_LEN: usize = 1024;
/// Most bytes a compiled match `regex` may take; a larger one is refused rather than built
/// (routers and the local proxy compile it too).
pub const MAX_MATCH_REGEX_COMPILED: usize = 256 * 1024;

const CANARY: &str = "spec.strategy.canary";

fn problem(path: impl Into<String>, message: impl Into<String>) -> SpecProblem {
    SpecProblem {
        path: path.into(),
        message: message.into(),
    }
}

/// Every problem of the managed routes and the steps that set them.
pub(super) fn check_routes(spec: &RolloutSpec, problems: &mut Vec<SpecProblem>) {
    let canary = &spec.strategy.canary;
    let routing = canary.traffic_routing.as_ref();
    let managed: Vec<&str> = routing
        .map(|r| r.managed_routes.iter().map(|m| m.name.as_str()).collect())
        .unwrap_or_default();
    check_managed_names(&managed, problems);
    let router = RouterKind::of(routing);
    let mut header_names = BTreeSet::new();
    let mut mirror_names = BTreeSet::new();
    for (i, step) in canary
        .steps
        .iter()
        .take(super::validate::MAX_STEPS)
        .enumerate()
    {
        if let Some(set) = &step.set_header_route {
            let path = format!("{CANARY}.steps[{i}].setHeaderRoute");
            check_capability(router, Capability::HeaderRoute, &path, problems);
            check_name(&set.name, &managed, &path, problems);
            header_names.insert(set.name.as_str());
            check_header_route(set, &path, problems);
        }
        if let Some(set) = &step.set_mirror_route {
            let path = format!("{CANARY}.steps[{i}].setMirrorRoute");
            check_capability(router, Capability::MirrorRoute, &path, problems);
            check_name(&set.name, &managed, &path, problems);
            mirror_names.insert(set.name.as_str());
            check_mirror_route(set, &path, problems);
        }
    }
    for name in header_names.intersection(&mirror_names) {
        problems.push(problem(
            format!("{CANARY}.trafficRouting.managedRoutes"),
            format!("`{name}` is set by both setHeaderRoute and setMirrorRoute steps; a managed route is one or the other"),
        ));
    }
}

/// Whether a step uses header or mirror routes (it then converges like `setWeight`).
pub(super) fn sets_route(step: &CanaryStep) -> bool {
    step.set_header_route.is_some() || step.set_mirror_route.is_some()
}

fn check_managed_names(managed: &[&str], problems: &mut Vec<SpecProblem>) {
    let path = format!("{CANARY}.trafficRouting.managedRoutes");
    if managed.len() > MAX_MANAGED_ROUTES {
        problems.push(problem(
            path.clone(),
            format!(
                "{} routes is over the limit of {MAX_MANAGED_ROUTES} (MAX_MANAGED_ROUTES)",
                managed.len()
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, name) in managed.iter().enumerate() {
        let at = format!("{path}[{i}].name");
        if let Some(reason) = bad_route_name(name) {
            problems.push(problem(at.clone(), reason));
        }
        if !seen.insert(*name) {
            problems.push(problem(at, format!("`{name}` is listed twice")));
        }
    }
}

/// Why `name` cannot name a managed route, if it cannot.
fn bad_route_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("empty route name".into());
    }
    if name.len() > MAX_ROUTE_NAME_LEN {
        return Some(format!(
            "{} characters is over the limit of {MAX_ROUTE_NAME_LEN} (MAX_ROUTE_NAME_LEN)",
            name.len()
        ));
    }
    let label = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    (!label).then(|| {
        format!(
            "`{name}` is not a DNS label (lowercase letters, digits and `-`, not at either end)"
        )
    })
}

fn check_capability(
    router: RouterKind,
    capability: Capability,
    path: &str,
    problems: &mut Vec<SpecProblem>,
) {
    if router.supports(capability) {
        return;
    }
    let able: Vec<&str> = RouterKind::ROUTERS
        .iter()
        .filter(|r| r.supports(capability))
        .filter_map(|r| r.field())
        .collect();
    let instead = if able.is_empty() {
        "no router vigil drives can yet".to_owned()
    } else {
        format!("use trafficRouting.{}", able.join(" or trafficRouting."))
    };
    problems.push(problem(
        path,
        format!(
            "the {} router cannot {}; {instead}",
            router.name(),
            capability.describe()
        ),
    ));
}

fn check_name(name: &str, managed: &[&str], path: &str, problems: &mut Vec<SpecProblem>) {
    if !managed.contains(&name) {
        problems.push(problem(
            format!("{path}.name"),
            format!(
                "`{name}` is not listed in trafficRouting.managedRoutes; vigil changes only the routes listed there"
            ),
        ));
    }
}

fn check_header_route(set: &SetHeaderRoute, path: &str, problems: &mut Vec<SpecProblem>) {
    check_match_count(set.match_.len(), path, problems);
    for (j, m) in set.match_.iter().take(MAX_ROUTE_MATCHES).enumerate() {
        let at = format!("{path}.match[{j}]");
        check_header_name(&m.header_name, &format!("{at}.headerName"), problems);
        check_string_match(&m.header_value, &format!("{at}.headerValue"), problems);
    }
}

fn check_mirror_route(set: &SetMirrorRoute, path: &str, problems: &mut Vec<SpecProblem>) {
    if let Some(percentage) = set.percentage
        && !(0..=100).contains(&percentage)
    {
        problems.push(problem(
            format!("{path}.percentage"),
            format!("{percentage} is not in 0..=100"),
        ));
    }
    check_match_count(set.match_.len(), path, problems);
    for (j, m) in set.match_.iter().take(MAX_ROUTE_MATCHES).enumerate() {
        let at = format!("{path}.match[{j}]");
        if m.method.is_none() && m.path.is_none() && m.headers.is_empty() {
            problems.push(problem(
                at.clone(),
                "empty match: set method, path or headers (an empty entry would mirror everything)",
            ));
        }
        if let Some(method) = &m.method {
            check_string_match(method, &format!("{at}.method"), problems);
        }
        if let Some(request_path) = &m.path {
            check_string_match(request_path, &format!("{at}.path"), problems);
        }
        if m.headers.len() > MAX_MATCH_HEADERS {
            problems.push(problem(
                format!("{at}.headers"),
                format!(
                    "{} headers is over the limit of {MAX_MATCH_HEADERS} (MAX_MATCH_HEADERS)",
                    m.headers.len()
                ),
            ));
        }
        for (name, value) in m.headers.iter().take(MAX_MATCH_HEADERS) {
            let header = format!("{at}.headers.{}", printable(name));
            check_header_name(name, &header, problems);
            check_string_match(value, &header, problems);
        }
    }
}

fn check_match_count(count: usize, path: &str, problems: &mut Vec<SpecProblem>) {
    if count > MAX_ROUTE_MATCHES {
        problems.push(problem(
            format!("{path}.match"),
            format!("{count} entries is over the limit of {MAX_ROUTE_MATCHES} (MAX_ROUTE_MATCHES)"),
        ));
    }
}

/// A header name: an HTTP token (RFC 9110), not empty, bounded.
fn check_header_name(name: &str, path: &str, problems: &mut Vec<SpecProblem>) {
    let reason = if name.is_empty() {
        Some("empty header name".to_owned())
    } else if name.len() > MAX_HEADER_NAME_LEN {
        Some(format!(
            "{} characters is over the limit of {MAX_HEADER_NAME_LEN} (MAX_HEADER_NAME_LEN)",
            name.len()
        ))
    } else if !name.bytes().all(is_token_byte) {
        Some(format!(
            "`{}` is not a header name (letters, digits and !#$%&'*+-.^_`|~ only)",
            printable(name)
        ))
    } else {
        None
    };
    if let Some(reason) = reason {
        problems.push(problem(path, reason));
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Exactly one of `exact`, `prefix`, `regex`; values bounded; a regex that compiles within
/// [`MAX_MATCH_REGEX_COMPILED`].
fn check_string_match(value: &StringMatch, path: &str, problems: &mut Vec<SpecProblem>) {
    let set: Vec<&str> = [
        ("exact", value.exact.is_some()),
        ("prefix", value.prefix.is_some()),
        ("regex", value.regex.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    if set.len() != 1 {
        let which = if set.is_empty() {
            "none".to_owned()
        } else {
            set.join(", ")
        };
        problems.push(problem(
            path,
            format!("set exactly one of exact, prefix, regex (this sets {which})"),
        ));
    }
    for (field, text) in [("exact", &value.exact), ("prefix", &value.prefix)] {
        if let Some(text) = text
            && text.len() > MAX_MATCH_VALUE_LEN
        {
            problems.push(problem(
                format!("{path}.{field}"),
                format!(
                    "{} bytes is over the limit of {MAX_MATCH_VALUE_LEN} (MAX_MATCH_VALUE_LEN)",
                    text.len()
                ),
            ));
        }
    }
    if let Some(regex) = &value.regex {
        check_regex(regex, &format!("{path}.regex"), problems);
    }
}

fn check_regex(regex: &str, path: &str, problems: &mut Vec<SpecProblem>) {
    if regex.len() > MAX_MATCH_REGEX_LEN {
        problems.push(problem(
            path,
            format!(
                "{} bytes is over the limit of {MAX_MATCH_REGEX_LEN} (MAX_MATCH_REGEX_LEN)",
                regex.len()
            ),
        ));
        return;
    }
    if let Err(error) = compile_match_regex(regex) {
        // The parser's last line names the problem; the lines above repeat the wrapped text.
        let text = error.to_string();
        let reason = text.lines().last().unwrap_or_default();
        let reason = reason.strip_prefix("error: ").unwrap_or(reason);
        problems.push(problem(path, format!("does not compile: {reason}")));
    }
}

/// Compiles a match `regex` within the bounds validation promised (anchored to the whole
/// value, as Envoy's and the Gateway API's RegularExpression matches are).
pub fn compile_match_regex(regex: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{regex})$"))
        .size_limit(MAX_MATCH_REGEX_COMPILED)
        .dfa_size_limit(MAX_MATCH_REGEX_COMPILED)
        .build()
}

/// `text` with control characters escaped, short enough for a message.
fn printable(text: &str) -> String {
    let escaped: String = text.escape_debug().collect();
    if escaped.len() <= MAX_HEADER_NAME_LEN {
        return escaped;
    }
    let mut cut = MAX_HEADER_NAME_LEN;
    while !escaped.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &escaped[..cut])
}
