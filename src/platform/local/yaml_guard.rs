//! A cheap nesting-depth check that runs before a YAML parser sees a document.
//!
//! The YAML parser's time grows with the square of the nesting depth (50 000 levels took 21 s),
//! so a short body such as `[[[[...` can occupy a CPU for minutes. [`check_nesting`] scans the
//! text once, in linear time, and refuses documents nested deeper than [`MAX_YAML_NESTING`].
//!
//! The estimate is meant to err on the high side:
//! - every `[` and `{` opens a level, even inside a quoted string or a comment; a `]` or `}`
//!   closes one only outside strings and comments;
//! - each indentation column on the path to a line counts twice (a mapping and a sequence
//!   may share a column: `key:` followed by `- item` at the same indentation);
//! - each `- ` and `? ` that starts a node on the line counts once (compact `- - - x`).
//!
//! Rollouts and templates nest about 15-25 levels deep by this count, far below the limit. The
//! scan tracks quoted strings only roughly; an input crafted to make it lose track of a string
//! can still reach the parser, which is why callers also cap the size and parse off the async
//! workers.

/// Deepest nesting accepted by [`check_nesting`]. A Rollout with its pod template is about 15
/// levels by the (over-)estimate; 64 leaves room for any real resource, and the parser's
/// quadratic cost at 64 levels is negligible.
pub const MAX_YAML_NESTING: usize = 64;

/// Why a YAML text was refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlGuardError {
    /// The text nests deeper than [`MAX_YAML_NESTING`].
    #[error(
        "YAML nesting depth exceeds the limit of {MAX_YAML_NESTING} levels on line {line} \
         (collections inside collections); no Rollout or template needs that many"
    )]
    CheckNesting {
        /// The 1-based line where the limit was passed.
        line: usize,
    },
}

/// Refuses `text` when it nests deeper than [`MAX_YAML_NESTING`] (see the module docs for how
/// depth is counted). Linear in the length of `text`.
pub fn check_nesting(text: &str) -> Result<(), YamlGuardError> {
    let mut scan = Scan::default();
    for (index, line) in yaml_lines(text).enumerate() {
        if scan.line(line) > MAX_YAML_NESTING {
            return Err(YamlGuardError::CheckNesting {
                line: index.saturating_add(1),
            });
        }
    }
    Ok(())
}

/// The lines of `text` as the YAML parser (libyaml) sees them: it breaks lines at `\n`, `\r\n`,
/// a lone `\r`, NEL (U+0085), LS (U+2028) and PS (U+2029). Splitting at `\n` only let
/// `#c\r[[[...` pass as one comment line while the parser saw 250 000 levels.
pub(crate) fn yaml_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        let Some((at, found)) = current
            .char_indices()
            .find(|(_, c)| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        else {
            rest = None;
            // Like `str::lines`: no empty last line after a final break.
            return (!current.is_empty()).then_some(current);
        };
        let mut next = at.saturating_add(found.len_utf8());
        if found == '\r' && current.as_bytes().get(next) == Some(&b'\n') {
            next = next.saturating_add(1);
        }
        rest = current.get(next..);
        Some(&current[..at])
    })
}

/// Counts the `[` and `{` in `bytes`.
fn opening_brackets(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| matches!(b, b'[' | b'{')).count()
}

/// The quote a flow collection's string is in, carried from line to line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    Single,
    Double,
}

#[derive(Debug, Default)]
struct Scan {
    /// Indentation columns on the path to the current line, strictly increasing.
    indents: Vec<usize>,
    /// Open flow collections (`[` and `{`).
    flow: usize,
    /// A quoted string inside a flow collection that continues on the next line.
    quote: Option<Quote>,
}

fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

impl Scan {
    /// Scans one line; returns the estimated depth reached on it.
    fn line(&mut self, line: &str) -> usize {
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|b| **b == b' ').count();
        let rest = &bytes[indent..];
        let content = rest.iter().position(|b| !is_blank(*b));
        let Some(first) = content else { return 0 };
        if self.quote.is_none() && rest[first] == b'#' {
            // A comment: its brackets still count on this line (never an under-count, should
            // the parser disagree), but neither the indentation path nor the flow level moves.
            return self
                .indents
                .len()
                .saturating_mul(2)
                .saturating_add(self.flow)
                .saturating_add(opening_brackets(rest));
        }
        if indent == 0 && self.quote.is_none() && is_document_marker(rest) {
            *self = Scan::default();
            return 0;
        }
        while self.indents.last().is_some_and(|&top| top > indent) {
            self.indents.pop();
        }
        if self.indents.last() != Some(&indent) {
            self.indents.push(indent);
        }
        let prefixes = node_prefixes(rest);
        let deepest_flow = self.brackets(rest);
        self.indents
            .len()
            .saturating_mul(2)
            .saturating_add(prefixes)
            .saturating_add(deepest_flow)
    }

    /// Counts brackets on the line; returns the deepest flow level reached.
    fn brackets(&mut self, bytes: &[u8]) -> usize {
        let mut deepest = self.flow;
        let mut previous: Option<u8> = None;
        let mut index = 0;
        while let Some(&byte) = bytes.get(index) {
            index += 1;
            if matches!(byte, b'[' | b'{') {
                // Counted everywhere, strings and comments included: never an under-count.
                self.flow = self.flow.saturating_add(1);
                deepest = deepest.max(self.flow);
            }
            match self.quote {
                Some(Quote::Double) => match byte {
                    b'\\' => index += 1,
                    b'"' => self.quote = None,
                    _ => {}
                },
                Some(Quote::Single) => {
                    if byte == b'\'' {
                        if bytes.get(index) == Some(&b'\'') {
                            index += 1;
                        } else {
                            self.quote = None;
                        }
                    }
                }
                None => match byte {
                    b']' | b'}' => self.flow = self.flow.saturating_sub(1),
                    b'#' if previous.is_none_or(is_blank) => {
                        // The rest is a comment: its brackets count on this line only.
                        let in_comment = bytes.get(index..).map_or(0, opening_brackets);
                        deepest = deepest.max(self.flow.saturating_add(in_comment));
                        break;
                    }
                    b'"' | b'\'' if starts_node(previous) => {
                        self.quote = Some(if byte == b'"' {
                            Quote::Double
                        } else {
                            Quote::Single
                        });
                    }
                    _ => {}
                },
            }
            previous = Some(byte);
        }
        // Outside flow collections a quoted string cannot hide brackets on the next lines.
        if self.flow == 0 {
            self.quote = None;
        }
        deepest
    }
}

/// Whether a quote after `previous` opens a quoted string (it is the start of a node).
fn starts_node(previous: Option<u8>) -> bool {
    previous.is_none_or(|b| is_blank(b) || matches!(b, b'[' | b'{' | b',' | b':' | b'-' | b'?'))
}

/// `---` or `...` alone (or followed by a space) at column 0.
fn is_document_marker(line: &[u8]) -> bool {
    (line.starts_with(b"---") || line.starts_with(b"..."))
        && line.get(3).is_none_or(|b| is_blank(*b))
}

/// The `- ` and `? ` indicators that open nodes at the start of the line.
fn node_prefixes(mut rest: &[u8]) -> usize {
    let mut count = 0usize;
    loop {
        let trimmed = rest
            .iter()
            .position(|b| !is_blank(*b))
            .unwrap_or(rest.len());
        rest = &rest[trimmed..];
        match rest {
            [b'-' | b'?'] => return count.saturating_add(1),
            [b'-' | b'?', next, ..] if is_blank(*next) => {
                count = count.saturating_add(1);
                rest = &rest[1..];
            }
            _ => return count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_of(text: &str) -> usize {
        let mut scan = Scan::default();
        yaml_lines(text)
            .map(|line| scan.line(line))
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn a_50k_deep_flow_bomb_is_refused_at_its_first_line() {
        let bomb = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
        assert_eq!(
            check_nesting(&bomb),
            Err(YamlGuardError::CheckNesting { line: 1 })
        );
    }

    #[test]
    fn deep_block_nesting_is_refused() {
        let mut text = String::new();
        for level in 0..40 {
            text.push_str(&" ".repeat(level * 2));
            text.push_str(&format!("k{level}:\n"));
        }
        assert!(check_nesting(&text).is_err());
        assert!(
            check_nesting(&"- ".repeat(100)).is_err(),
            "compact sequences"
        );
        let multiline: String = (0..100).map(|_| "[\n").collect();
        assert!(check_nesting(&multiline).is_err(), "one bracket per line");
    }

    #[test]
    fn brackets_closed_inside_strings_or_comments_do_not_hide_depth() {
        let hidden = format!(
            "{}\"{}\" # {}",
            "[".repeat(70),
            "]".repeat(70),
            "]".repeat(70)
        );
        assert!(check_nesting(&hidden).is_err());
        let single = format!("{}'it''s {}'", "{".repeat(70), "}".repeat(70));
        assert!(check_nesting(&single).is_err());
        let across_lines = format!("{}\n\"a\n{}\"\n", "[".repeat(70), "]".repeat(70));
        assert!(check_nesting(&across_lines).is_err());
    }

    #[test]
    fn carriage_return_comment_hiding_a_250k_flow_bomb_is_refused() {
        let bomb = format!("#c\r{}{}", "[".repeat(250_000), "]".repeat(250_000));
        assert_eq!(
            check_nesting(&bomb),
            Err(YamlGuardError::CheckNesting { line: 2 })
        );
    }

    #[test]
    fn nel_ls_and_ps_line_breaks_do_not_hide_a_flow_bomb() {
        for line_break in ['\u{85}', '\u{2028}', '\u{2029}'] {
            let bomb = format!("#c{line_break}{}{}", "[".repeat(1000), "]".repeat(1000));
            assert_eq!(
                check_nesting(&bomb),
                Err(YamlGuardError::CheckNesting { line: 2 }),
                "{:?}",
                line_break
            );
        }
    }

    #[test]
    fn carriage_return_comment_hiding_compact_sequences_is_refused() {
        let bomb = format!("#c\r{}x", "- ".repeat(1000));
        assert!(check_nesting(&bomb).is_err());
        let nel = format!("#c\u{85}{}x", "- ".repeat(1000));
        assert!(check_nesting(&nel).is_err());
    }

    #[test]
    fn lone_carriage_return_does_not_hide_closing_brackets_inside_strings() {
        // After `\r` the `"` starts a node, so `"]"` is a string and its `]` closes nothing.
        let bomb = "[\r\"]\",".repeat(100);
        assert!(check_nesting(&bomb).is_err());
    }

    #[test]
    fn brackets_on_a_comment_line_count() {
        let comment = format!("a: 1\n# {}\n", "[".repeat(100));
        assert!(check_nesting(&comment).is_err());
        let trailing = format!("a: 1 # {}\n", "{".repeat(100));
        assert!(check_nesting(&trailing).is_err());
        // Counted on their line only: ordinary comments do not add up.
        let many = "# see [docs] and {x}\na: 1\n".repeat(200);
        assert_eq!(check_nesting(&many), Ok(()));
    }

    #[test]
    fn crlf_counts_as_one_line_break() {
        assert_eq!(
            yaml_lines("a\r\nb\rc\n\nd\n").collect::<Vec<_>>(),
            ["a", "b", "c", "", "d"]
        );
    }

    #[test]
    fn real_queries_and_documents_are_shallow() {
        let rollout = "\
apiVersion: vigil.dev/v1alpha1
kind: Rollout
metadata: {name: demo}
spec:
  template:
    spec:
      containers:
        - name: app
          command: [\"vigil\", \"demo-app\", \"--version\", \"v1\"]
          env:
            - name: X
              valueFrom:
                secretKeyRef: {name: s, key: k}
  strategy:
    canary:
      steps:
        - setWeight: 20
        - analysis:
            templates:
              - templateName: error-rate
---
kind: AnalysisTemplate
spec:
  metrics:
    - name: errors
      provider:
        prometheus:
          query: |
            sum(rate(http_requests_total{code=~\"5..\", rollout=\"{{args.name}}\"}[5m]))
            / sum(rate(http_requests_total{rollout=\"{{args.name}}\"}[5m]))
";
        assert!(depth_of(rollout) < 30, "depth {}", depth_of(rollout));
        assert_eq!(check_nesting(rollout), Ok(()));
    }

    #[test]
    fn every_shipped_yaml_file_passes() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut checked = 0;
        for dir in ["deploy", "analysis-templates", "crds", "tests/fixtures"] {
            let mut stack = vec![root.join(dir)];
            while let Some(path) = stack.pop() {
                if path.is_dir() {
                    stack.extend(
                        std::fs::read_dir(&path)
                            .into_iter()
                            .flatten()
                            .flatten()
                            .map(|e| e.path()),
                    );
                } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    assert_eq!(check_nesting(&text), Ok(()), "{}", path.display());
                    checked += 1;
                }
            }
        }
        assert!(checked > 5, "found only {checked} files");
    }
}
