//! `vigil judge`: run a judge on data given on the command line or in files, offline.
//!
//! Exit codes: 0 pass, 1 fail, 2 inconclusive (no data, undecided, error label), 3 the input
//! could not be read or judged, 4 bad usage ([`EXIT_CODES_HELP`]).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use crate::analysis::judge::Verdict;
use crate::analysis::judge::mann_whitney::{
    Direction, ExactMode, KayentaConfig, NanStrategy, classify,
};
use crate::analysis::judge::sequential::{
    CountIncrement, CountState, CountTest, CountTestConfig, SequentialDecision, SequentialError,
    StratumCounts, split_alpha,
};
use crate::api::SequentialJudge;

/// Errors of `vigil judge`; each variant names the action that failed.
#[derive(Debug, thiserror::Error)]
pub enum JudgeCliError {
    /// A sample file could not be read.
    #[error("cannot read samples from {path}: {source}")]
    ReadSamples {
        /// The file (`-` is stdin).
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line of a sample file is not a number.
    #[error("cannot parse line {line} of {path} as a number: {text:?}")]
    ParseSample {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending text.
        text: String,
    },
    /// A JSON input is malformed.
    #[error("cannot parse JSON from {path}: {source}")]
    ParseJson {
        /// The file.
        path: PathBuf,
        /// The parser error.
        source: serde_json::Error,
    },
    /// A comma-separated count list is malformed.
    #[error("cannot parse {flag} value {text:?} as a non-negative integer")]
    ParseCounts {
        /// The flag.
        flag: &'static str,
        /// The offending item.
        text: String,
    },
    /// The count series do not describe the same intervals.
    #[error("cannot align count series: {detail}")]
    AlignCounts {
        /// What differs.
        detail: String,
    },
    /// The sequential judge rejected the input or the configuration.
    #[error("sequential judge: {0}")]
    RunSequentialTest(#[from] SequentialError),
    /// Output could not be serialised.
    #[error("cannot write output: {0}")]
    WriteOutput(serde_json::Error),
}

/// The exit codes, as `--help` shows them.
pub const EXIT_CODES_HELP: &str = "Exit code: 0 Pass, 1 Fail, 2 Inconclusive (no data, \
undecided), 3 the input could not be read or judged, 4 bad usage.";

/// Exit code: bad usage (2 is Inconclusive).
pub const EXIT_USAGE: i32 = 4;

/// Significant digits numbers are printed with: enough for any judge's precision, few enough
/// that `0.041` does not print as `0.04100000000000001`.
const SIGNIFICANT_DIGITS: usize = 12;

/// `vigil judge`: run a statistical judge offline on samples or counts.
#[derive(Debug, Args)]
pub struct JudgeArgs {
    /// Which judge.
    #[command(subcommand)]
    pub command: JudgeCommand,
}

/// The judges.
#[derive(Debug, Subcommand)]
pub enum JudgeCommand {
    /// Kayenta-compatible Mann–Whitney judge on two samples (e.g. one value per Prometheus step).
    #[command(after_help = EXIT_CODES_HELP)]
    MannWhitney(MannWhitneyArgs),
    /// Anytime-valid sequential test on error and request counts, one interval per item.
    #[command(after_help = EXIT_CODES_HELP)]
    SequentialCounts(SequentialCountsArgs),
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One JSON document.
    Json,
    /// Aligned `key: value` lines for people.
    Table,
}

/// Direction flag values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DirectionArg {
    /// Only a higher canary fails.
    Increase,
    /// Only a lower canary fails.
    Decrease,
    /// Either fails.
    Either,
}

/// NaN strategy flag values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NanArg {
    /// Drop NaN values.
    Remove,
    /// Replace NaN with 0.
    Replace,
}

/// Reads a float flag, refusing NaN and infinities: every float a judge takes is a finite
/// level, margin or scale, and a NaN would compare false everywhere and silently pass.
fn finite_f64(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("{text:?} is not a finite number"))
    }
}

/// Arguments of `vigil judge mann-whitney`.
#[derive(Debug, Args)]
pub struct MannWhitneyArgs {
    /// Canary samples: one number per line (blank lines and `#` comments skipped, `NaN`
    /// allowed) or a JSON array of numbers (null = NaN). `-` reads stdin.
    #[arg(long)]
    pub canary: PathBuf,
    /// Baseline samples, same format.
    #[arg(long)]
    pub baseline: PathBuf,
    /// Two-sided confidence level of the shift interval.
    #[arg(long, default_value_t = 0.98, value_parser = finite_f64)]
    pub confidence: f64,
    /// Which deviation fails.
    #[arg(long, value_enum, default_value_t = DirectionArg::Either)]
    pub direction: DirectionArg,
    /// High needs CI lower > tolerance·|estimate| (Kayenta's relative band).
    #[arg(long, default_value_t = 0.25, value_parser = finite_f64)]
    pub tolerance: f64,
    /// What to do with NaN values.
    #[arg(long, value_enum, default_value_t = NanArg::Remove)]
    pub nan_strategy: NanArg,
    /// Never compute exact p-values and CI ranks (Kayenta's behaviour).
    #[arg(long)]
    pub asymptotic: bool,
    /// Output format (`table` for people, as every command defaults to; `json`).
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Arguments of `vigil judge sequential-counts`.
///
/// Counts are per-interval increments (one item per scrape interval), given either as four
/// comma-separated lists or as a JSON file `[{"canaryErrors": 1, "canaryRequests": 200,
/// "baselineErrors": 0, "baselineRequests": 195}, ...]`. An item may give its counts per
/// stratum instead (as a template's `stratifyBy` does): `{"canaryStrata": [{"errors": 1,
/// "requests": 70}, ...], "baselineStrata": [...]}`; the arms' totals are then their sums and
/// the spread between strata tempers the test. With `--cumulative` the items are
/// counter readings instead and their differences are used (a decrease = counter reset: the
/// reading itself is the increment). The last interval is treated as the deadline unless
/// `--ongoing` is given.
#[derive(Debug, Args)]
pub struct SequentialCountsArgs {
    /// Canary errors per interval, e.g. `0,2,1`.
    #[arg(long, value_delimiter = ',', required_unless_present = "input")]
    pub canary_errors: Vec<String>,
    /// Canary requests per interval (errors included).
    #[arg(long, value_delimiter = ',', required_unless_present = "input")]
    pub canary_requests: Vec<String>,
    /// Baseline errors per interval.
    #[arg(long, value_delimiter = ',', required_unless_present = "input")]
    pub baseline_errors: Vec<String>,
    /// Baseline requests per interval.
    #[arg(long, value_delimiter = ',', required_unless_present = "input")]
    pub baseline_requests: Vec<String>,
    /// JSON file with the intervals instead of the four lists (`-` reads stdin).
    #[arg(long, conflicts_with_all = ["canary_errors", "canary_requests", "baseline_errors", "baseline_requests"])]
    pub input: Option<PathBuf>,
    /// The values are cumulative counter readings, not increments.
    #[arg(long)]
    pub cumulative: bool,
    /// Run-level false-fail budget (the template default).
    #[arg(long, default_value_t = SequentialJudge::DEFAULT_ALPHA, value_parser = finite_f64)]
    pub alpha: f64,
    /// Number of sequential metrics sharing the budget (Bonferroni split).
    #[arg(long, default_value_t = 1)]
    pub metrics: usize,
    /// Fail when the error-rate ratio canary/baseline is confidently above 1 + this (the
    /// template default, so the command judges as a template with no margins does).
    #[arg(long, default_value_t = SequentialJudge::DEFAULT_FAIL_MARGIN, value_parser = finite_f64)]
    pub fail_margin: f64,
    /// Pass early when the ratio is confidently below 1 + this (the template default).
    #[arg(long, default_value_t = SequentialJudge::DEFAULT_PASS_MARGIN, value_parser = finite_f64)]
    pub pass_margin: f64,
    /// Scale of the mixing distribution on the log rate ratio.
    #[arg(long, default_value_t = 0.5, value_parser = finite_f64)]
    pub prior_scale: f64,
    /// Do not guard against one arm's own noise with the strata: no tempering by the
    /// overdispersion seen between strata, and no pod-permutation test before a Fail.
    #[arg(long)]
    pub no_dispersion_tempering: bool,
    /// Judge as background analysis does: a pass starts a fresh test (the k-th spending
    /// α/2^k) instead of ending the judgement.
    #[arg(long)]
    pub keep_watching: bool,
    /// The analysis is still running: the last interval is not the deadline.
    #[arg(long)]
    pub ongoing: bool,
    /// Output format (`table` for people, as every command defaults to; `json`).
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Runs `vigil judge`, prints the result on stdout and returns the exit code.
pub fn run(args: JudgeArgs) -> Result<i32, JudgeCliError> {
    let (document, verdict) = match args.command {
        JudgeCommand::MannWhitney(a) => {
            let output = a.output;
            let (doc, verdict) = run_mann_whitney(&a)?;
            (render(&doc, output)?, verdict)
        }
        JudgeCommand::SequentialCounts(a) => {
            let output = a.output;
            let (doc, verdict) = run_sequential_counts(&a)?;
            (render(&doc, output)?, verdict)
        }
    };
    crate::outln!("{document}");
    Ok(exit_code(verdict))
}

/// Exit code for a verdict: 0 pass, 1 fail, 2 inconclusive.
pub fn exit_code(verdict: Verdict) -> i32 {
    match verdict {
        Verdict::Pass => 0,
        Verdict::Fail => 1,
        Verdict::Inconclusive => 2,
    }
}

/// Computes the Mann–Whitney JSON document and verdict (no printing).
pub fn run_mann_whitney(
    args: &MannWhitneyArgs,
) -> Result<(serde_json::Value, Verdict), JudgeCliError> {
    let canary = read_samples(&args.canary)?;
    let baseline = read_samples(&args.baseline)?;
    let config = KayentaConfig {
        direction: match args.direction {
            DirectionArg::Increase => Direction::Increase,
            DirectionArg::Decrease => Direction::Decrease,
            DirectionArg::Either => Direction::Either,
        },
        tolerance: args.tolerance,
        confidence: args.confidence,
        nan_strategy: match args.nan_strategy {
            NanArg::Remove => NanStrategy::Remove,
            NanArg::Replace => NanStrategy::Replace,
        },
        exact: if args.asymptotic {
            ExactMode::Never
        } else {
            ExactMode::Auto
        },
        ..KayentaConfig::default()
    };
    let result = classify(&canary, &baseline, &config);
    let test = result.test.as_ref();
    let warning = undetectable(result.n_canary, result.n_baseline, args.confidence);
    let document = json!({
        "n_canary": result.n_canary,
        "n_baseline": result.n_baseline,
        "u": test.map(|t| t.u),
        "p_value": test.map(|t| t.p_value.two_sided),
        "p_value_exact": test.and_then(|t| t.p_value_exact.map(|p| p.two_sided)),
        "hodges_lehmann": test.map(|t| t.hodges_lehmann),
        "ci_lower": test.map(|t| t.ci_lower),
        "ci_upper": test.map(|t| t.ci_upper),
        "confidence": args.confidence,
        "effect_size": result.effect_size,
        "label": result.label,
        "critical": result.critical,
        "reason": result.reason,
        "warning": warning,
    });
    Ok((document, result.label.verdict()))
}

/// Why a Pass cannot be trusted when the samples are too few for the test to ever reject at
/// `confidence`: the smallest two-sided p-value of a rank test on `n` and `m` samples is
/// `2 / C(n+m, n)` (all canary samples above all baseline ones). `None` when it can reject.
pub fn undetectable(n: usize, m: usize, confidence: f64) -> Option<String> {
    let alpha = 1.0 - confidence;
    let smallest_p = |n: usize, m: usize| (2.0 / binomial(n + m, n)).min(1.0);
    if n == 0 || m == 0 || smallest_p(n, m) <= alpha {
        return None;
    }
    let needed = (1..=64).find(|&k| smallest_p(k, k) <= alpha).unwrap_or(64);
    Some(format!(
        "{n} canary and {m} baseline samples cannot detect any difference at confidence \
         {confidence} (the smallest possible p-value is {:.3}): a Pass here means no evidence, \
         not no difference; give at least {needed} samples each",
        smallest_p(n, m)
    ))
}

/// `C(n, k)` as a float (exact for the sizes that matter here, +inf beyond).
fn binomial(n: usize, k: usize) -> f64 {
    let k = k.min(n.saturating_sub(k));
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// Computes the sequential-counts JSON document and final verdict (no printing).
pub fn run_sequential_counts(
    args: &SequentialCountsArgs,
) -> Result<(serde_json::Value, Verdict), JudgeCliError> {
    let mut intervals = match &args.input {
        Some(path) => {
            let text = read_text(path)?;
            serde_json::from_str::<Vec<IntervalInput>>(&text).map_err(|source| {
                JudgeCliError::ParseJson {
                    path: path.clone(),
                    source,
                }
            })?
        }
        None => intervals_from_lists(args)?
            .into_iter()
            .map(IntervalInput::from)
            .collect(),
    };
    if args.cumulative {
        if intervals.iter().any(IntervalInput::is_stratified) {
            return Err(JudgeCliError::AlignCounts {
                detail: "--cumulative takes totals, not canaryStrata/baselineStrata".to_owned(),
            });
        }
        let totals = intervals
            .iter()
            .enumerate()
            .map(|(index, interval)| interval.totals(index))
            .collect::<Result<Vec<_>, _>>()?;
        intervals = differences(&totals)
            .into_iter()
            .map(IntervalInput::from)
            .collect();
    }
    let test = CountTest::new(CountTestConfig {
        alpha: split_alpha(args.alpha, args.metrics),
        fail_margin: args.fail_margin,
        pass_margin: args.pass_margin,
        prior_scale: args.prior_scale,
        temper_overdispersion: !args.no_dispersion_tempering,
        keep_watching: args.keep_watching,
    })?;
    let mut state = CountState::default();
    let mut steps = Vec::with_capacity(intervals.len());
    let mut last = SequentialDecision::Inconclusive;
    for (index, interval) in intervals.iter().enumerate() {
        if interval.is_stratified() {
            test.update_stratified(
                &mut state,
                &interval.canary_strata,
                &interval.baseline_strata,
            )?;
        } else {
            test.update(&mut state, &interval.totals(index)?)?;
        }
        let at_deadline = !args.ongoing && index + 1 == intervals.len();
        let report = test.evaluate(&mut state, at_deadline);
        last = report.decision;
        steps.push(json!({
            "step": index + 1,
            "decision": report.decision,
            "ratio_estimate": report.ratio_estimate,
            "ratio_lower": report.ratio_lower,
            "ratio_upper": finite_or_null(report.ratio_upper),
            "e_fail": report.e_fail,
            "e_pass": report.e_pass,
            "detectable_ratio": report.detectable_ratio,
            "reason": report.reason,
        }));
    }
    let reason = steps
        .last()
        .and_then(|s| s["reason"].as_str().map(str::to_string))
        .unwrap_or_else(|| "no intervals given".to_string());
    let document = json!({
        "alpha": test.config().alpha,
        "decision": last,
        "reason": reason,
        "state": state,
        "steps": steps,
    });
    Ok((document, last.verdict()))
}

/// One interval of `--input`: the arms' totals, or their strata.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IntervalInput {
    canary_errors: Option<u64>,
    canary_requests: Option<u64>,
    baseline_errors: Option<u64>,
    baseline_requests: Option<u64>,
    #[serde(default)]
    canary_strata: Vec<StratumCounts>,
    #[serde(default)]
    baseline_strata: Vec<StratumCounts>,
}

impl IntervalInput {
    fn is_stratified(&self) -> bool {
        !self.canary_strata.is_empty() || !self.baseline_strata.is_empty()
    }

    /// The four totals; all are needed when no strata are given.
    fn totals(&self, index: usize) -> Result<CountIncrement, JudgeCliError> {
        let field = |value: Option<u64>, name: &str| {
            value.ok_or_else(|| JudgeCliError::AlignCounts {
                detail: format!("interval {} has no {name} (nor strata)", index + 1),
            })
        };
        Ok(CountIncrement {
            canary_errors: field(self.canary_errors, "canaryErrors")?,
            canary_requests: field(self.canary_requests, "canaryRequests")?,
            baseline_errors: field(self.baseline_errors, "baselineErrors")?,
            baseline_requests: field(self.baseline_requests, "baselineRequests")?,
        })
    }
}

impl From<CountIncrement> for IntervalInput {
    fn from(totals: CountIncrement) -> Self {
        Self {
            canary_errors: Some(totals.canary_errors),
            canary_requests: Some(totals.canary_requests),
            baseline_errors: Some(totals.baseline_errors),
            baseline_requests: Some(totals.baseline_requests),
            ..Self::default()
        }
    }
}

fn finite_or_null(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn intervals_from_lists(args: &SequentialCountsArgs) -> Result<Vec<CountIncrement>, JudgeCliError> {
    let parse = |flag: &'static str, items: &[String]| -> Result<Vec<u64>, JudgeCliError> {
        items
            .iter()
            .map(|item| {
                item.trim()
                    .parse::<u64>()
                    .map_err(|_| JudgeCliError::ParseCounts {
                        flag,
                        text: item.clone(),
                    })
            })
            .collect()
    };
    let canary_errors = parse("--canary-errors", &args.canary_errors)?;
    let canary_requests = parse("--canary-requests", &args.canary_requests)?;
    let baseline_errors = parse("--baseline-errors", &args.baseline_errors)?;
    let baseline_requests = parse("--baseline-requests", &args.baseline_requests)?;
    let len = canary_errors.len();
    if [
        canary_requests.len(),
        baseline_errors.len(),
        baseline_requests.len(),
    ]
    .iter()
    .any(|&l| l != len)
    {
        return Err(JudgeCliError::AlignCounts {
            detail: format!(
                "lengths {len}, {}, {}, {}",
                canary_requests.len(),
                baseline_errors.len(),
                baseline_requests.len()
            ),
        });
    }
    Ok((0..len)
        .map(|i| CountIncrement {
            canary_errors: canary_errors[i],
            canary_requests: canary_requests[i],
            baseline_errors: baseline_errors[i],
            baseline_requests: baseline_requests[i],
        })
        .collect())
}

/// Counter readings to increments; a decrease is a counter reset (the reading is the increment).
fn differences(readings: &[CountIncrement]) -> Vec<CountIncrement> {
    let delta = |now: u64, before: u64| if now >= before { now - before } else { now };
    let mut previous = CountIncrement::default();
    readings
        .iter()
        .map(|r| {
            let d = CountIncrement {
                canary_errors: delta(r.canary_errors, previous.canary_errors),
                canary_requests: delta(r.canary_requests, previous.canary_requests),
                baseline_errors: delta(r.baseline_errors, previous.baseline_errors),
                baseline_requests: delta(r.baseline_requests, previous.baseline_requests),
            };
            previous = *r;
            d
        })
        .collect()
}

fn read_text(path: &Path) -> Result<String, JudgeCliError> {
    let failed = |source| JudgeCliError::ReadSamples {
        path: path.to_path_buf(),
        source,
    };
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(failed)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(failed)
    }
}

/// Parses samples: a JSON array (numbers, null = NaN) or one number per line.
pub fn parse_samples(text: &str, path: &Path) -> Result<Vec<f64>, JudgeCliError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let values: Vec<Option<f64>> =
            serde_json::from_str(trimmed).map_err(|source| JudgeCliError::ParseJson {
                path: path.to_path_buf(),
                source,
            })?;
        return Ok(values.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect());
    }
    let mut values = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let value = content
            .parse::<f64>()
            .map_err(|_| JudgeCliError::ParseSample {
                path: path.to_path_buf(),
                line: index + 1,
                text: content.to_string(),
            })?;
        values.push(value);
    }
    Ok(values)
}

fn read_samples(path: &Path) -> Result<Vec<f64>, JudgeCliError> {
    parse_samples(&read_text(path)?, path)
}

/// Numbers rounded to [`SIGNIFICANT_DIGITS`], everywhere in the document.
fn tidy_numbers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(number) => {
            if let Some(x) = number.as_f64().filter(|_| number.is_f64())
                && let Ok(rounded) = format!("{:.*e}", SIGNIFICANT_DIGITS - 1, x).parse::<f64>()
                && let Some(tidy) = serde_json::Number::from_f64(rounded)
            {
                *number = tidy;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(tidy_numbers),
        serde_json::Value::Object(map) => map.values_mut().for_each(tidy_numbers),
        _ => {}
    }
}

fn render(document: &serde_json::Value, format: OutputFormat) -> Result<String, JudgeCliError> {
    let mut document = document.clone();
    tidy_numbers(&mut document);
    let document = &document;
    match format {
        OutputFormat::Json => {
            serde_json::to_string_pretty(document).map_err(JudgeCliError::WriteOutput)
        }
        OutputFormat::Table => Ok(table(document)),
    }
}

fn table(document: &serde_json::Value) -> String {
    let Some(map) = document.as_object() else {
        return document.to_string();
    };
    let width = map.keys().map(String::len).max().unwrap_or(0);
    let mut out = Vec::new();
    for (key, value) in map {
        match value {
            serde_json::Value::Array(items) => {
                out.push(format!("{key:width$}:"));
                for item in items {
                    let line = item
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .filter(|(k, _)| k.as_str() != "reason")
                                .map(|(k, v)| format!("{k}={}", plain(v)))
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_else(|| plain(item));
                    out.push(format!("  {line}"));
                }
            }
            serde_json::Value::Object(_) => {}
            other => out.push(format!("{key:width$}: {}", plain(other))),
        }
    }
    out.join("\n")
}

fn plain(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Issue 16, friction 9: two samples each can never reject at 98%: say so.
    #[test]
    fn too_few_samples_to_detect_anything_are_called_out() {
        let warning = undetectable(2, 2, 0.98).expect("a warning at n=2");
        assert!(
            warning.contains("cannot detect any difference"),
            "{warning}"
        );
        assert!(warning.contains("0.333"), "{warning}");
        assert!(warning.contains("at least 5 samples each"), "{warning}");
        assert_eq!(undetectable(20, 20, 0.98), None);
        assert_eq!(undetectable(0, 5, 0.98), None, "no data says so itself");
    }

    /// Issue 16, friction 9: no float noise, in JSON or tables.
    #[test]
    fn numbers_print_without_float_noise() {
        let document =
            json!({"effect_size": 0.04100000000000001, "n": 3, "steps": [{"e": 0.1 + 0.2}]});
        let text = render(&document, OutputFormat::Json).expect("json");
        assert!(text.contains("0.041"), "{text}");
        assert!(!text.contains("0.04100000000000001"), "{text}");
        assert!(text.contains("\"e\": 0.3"), "{text}");
        let table = render(&document, OutputFormat::Table).expect("table");
        assert!(table.contains("effect_size: 0.041"), "{table}");
    }

    /// Issue 16, friction 9: `-o` as in `analyze`, and the same default (table).
    #[test]
    fn output_is_dash_o_and_defaults_to_table() {
        let cli =
            Cli::try_parse_from(["judge", "mann-whitney", "--canary", "c", "--baseline", "b"])
                .expect("parses");
        assert!(
            matches!(cli.judge, JudgeCommand::MannWhitney(ref a) if a.output == OutputFormat::Table)
        );
        let cli = Cli::try_parse_from([
            "judge",
            "mann-whitney",
            "--canary",
            "c",
            "--baseline",
            "b",
            "-o",
            "json",
        ])
        .expect("parses");
        assert!(
            matches!(cli.judge, JudgeCommand::MannWhitney(ref a) if a.output == OutputFormat::Json)
        );
    }

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        judge: JudgeCommand,
    }

    #[test]
    fn tolerance_nan_and_other_non_finite_floats_are_refused() {
        let mann_whitney = ["mann-whitney", "--canary", "c", "--baseline", "b"];
        let counts = [
            "sequential-counts",
            "--canary-errors",
            "0",
            "--canary-requests",
            "1",
            "--baseline-errors",
            "0",
            "--baseline-requests",
            "1",
        ];
        let cases: Vec<(Vec<&str>, &str)> = ["--tolerance", "--confidence"]
            .into_iter()
            .map(|flag| (mann_whitney.to_vec(), flag))
            .chain(
                ["--alpha", "--fail-margin", "--pass-margin", "--prior-scale"]
                    .into_iter()
                    .map(|flag| (counts.to_vec(), flag)),
            )
            .collect();
        for (base, flag) in cases {
            for bad in ["NaN", "inf", "-inf"] {
                let pair = format!("{flag}={bad}");
                let mut args = vec!["judge"];
                args.extend(&base);
                args.push(&pair);
                let error = Cli::try_parse_from(&args).expect_err("refused");
                let text = error.to_string();
                assert!(
                    text.contains(flag) && text.contains("not a finite number"),
                    "{args:?}: {text}"
                );
            }
        }
        assert!(
            Cli::try_parse_from([
                "judge",
                "mann-whitney",
                "--canary",
                "c",
                "--baseline",
                "b",
                "--tolerance",
                "0.3"
            ])
            .is_ok()
        );
    }

    fn parse(args: &[&str]) -> JudgeCommand {
        Cli::try_parse_from(std::iter::once("judge").chain(args.iter().copied()))
            .expect("valid arguments")
            .judge
    }

    #[test]
    fn parses_lines_json_and_nan() {
        let path = Path::new("x");
        assert_eq!(
            parse_samples("1\n\n2.5 # comment\n", path).expect("lines"),
            vec![1.0, 2.5]
        );
        let values = parse_samples("[1, null, 3]", path).expect("json");
        assert!(values[1].is_nan() && values.len() == 3);
        assert!(parse_samples("NaN\n", path).expect("nan")[0].is_nan());
        assert!(matches!(
            parse_samples("1\nabc\n", path),
            Err(JudgeCliError::ParseSample { line: 2, .. })
        ));
    }

    #[test]
    fn mann_whitney_json_has_the_documented_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let canary = dir.path().join("canary.txt");
        let baseline = dir.path().join("baseline.json");
        std::fs::write(
            &canary,
            "0.80\n0.83\n1.89\n1.04\n1.45\n1.38\n1.91\n1.64\n0.73\n1.46\n",
        )
        .expect("write");
        std::fs::write(&baseline, "[1.15, 0.88, 0.90, 0.74, 1.21]").expect("write");
        let JudgeCommand::MannWhitney(args) = parse(&[
            "mann-whitney",
            "--canary",
            canary.to_str().expect("utf-8"),
            "--baseline",
            baseline.to_str().expect("utf-8"),
            "--confidence",
            "0.95",
        ]) else {
            panic!("wrong subcommand")
        };
        let (doc, verdict) = run_mann_whitney(&args).expect("runs");
        assert_eq!(doc["n_canary"], 10);
        assert_eq!(doc["u"], 35.0);
        assert!((doc["p_value_exact"].as_f64().expect("exact") - 0.2544122544122544).abs() < 1e-12);
        assert!((doc["p_value"].as_f64().expect("p") - 0.24462360512698333).abs() < 1e-9);
        assert_eq!(doc["label"], "Pass");
        assert_eq!(verdict, Verdict::Pass);
        for key in [
            "hodges_lehmann",
            "ci_lower",
            "ci_upper",
            "reason",
            "n_baseline",
        ] {
            assert!(!doc[key].is_null(), "{key}");
        }
    }

    #[test]
    fn empty_input_is_nodata_not_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.txt");
        let nan = dir.path().join("nan.txt");
        std::fs::write(&empty, "").expect("write");
        std::fs::write(&nan, "NaN\nNaN\n").expect("write");
        let JudgeCommand::MannWhitney(args) = parse(&[
            "mann-whitney",
            "--canary",
            empty.to_str().expect("utf-8"),
            "--baseline",
            nan.to_str().expect("utf-8"),
        ]) else {
            panic!("wrong subcommand")
        };
        let (doc, verdict) = run_mann_whitney(&args).expect("runs");
        assert_eq!(doc["label"], "Nodata");
        assert!(doc["u"].is_null() && doc["p_value_exact"].is_null());
        assert_eq!(verdict, Verdict::Inconclusive);
        assert_eq!(exit_code(verdict), 2);
    }

    #[test]
    fn sequential_counts_reports_every_step_and_fails_a_bad_canary() {
        let JudgeCommand::SequentialCounts(args) = parse(&[
            "sequential-counts",
            "--canary-errors",
            "10,12,9,11,14",
            "--canary-requests",
            "1000,1000,1000,1000,1000",
            "--baseline-errors",
            "1,2,0,1,2",
            "--baseline-requests",
            "1000,1000,1000,1000,1000",
        ]) else {
            panic!("wrong subcommand")
        };
        let (doc, verdict) = run_sequential_counts(&args).expect("runs");
        assert_eq!(doc["steps"].as_array().expect("steps").len(), 5);
        assert_eq!(doc["decision"], "Fail");
        assert_eq!(verdict, Verdict::Fail);
        assert_eq!(doc["steps"][0]["decision"], "Continue");
        assert!(!table(&doc).is_empty());
    }

    #[test]
    fn strata_in_the_input_temper_a_noisy_pod_and_totals_are_needed_without_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pods.json");
        // One canary pod bursting (30 errors) where the others have 2: the canary's total
        // looks three times worse, its pods say it is one pod.
        let pods = |errors: [u64; 3]| {
            errors
                .iter()
                .map(|e| json!({"errors": e, "requests": 700}))
                .collect::<Vec<_>>()
        };
        let intervals: Vec<serde_json::Value> = (0..4)
            .map(|_| json!({"canaryStrata": pods([30, 2, 2]), "baselineStrata": pods([4, 3, 4])}))
            .collect();
        std::fs::write(&path, serde_json::to_string(&intervals).expect("json")).expect("write");
        let input = path.to_str().expect("utf-8");
        let JudgeCommand::SequentialCounts(args) = parse(&["sequential-counts", "--input", input])
        else {
            panic!("wrong subcommand")
        };
        let (doc, _) = run_sequential_counts(&args).expect("runs");
        assert_ne!(doc["decision"], "Fail", "{doc:#}");
        let reason = doc["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("overdispersion between strata"), "{reason}");
        // The same counts without the strata: no dispersion to temper by, and it fails.
        let JudgeCommand::SequentialCounts(mut args) = parse(&[
            "sequential-counts",
            "--input",
            input,
            "--no-dispersion-tempering",
        ]) else {
            panic!("wrong subcommand")
        };
        assert_eq!(
            run_sequential_counts(&args).expect("runs").0["decision"],
            "Fail"
        );
        std::fs::write(&path, r#"[{"canaryErrors": 1, "canaryRequests": 10}]"#).expect("write");
        args.no_dispersion_tempering = false;
        let error = run_sequential_counts(&args).expect_err("totals missing");
        assert!(error.to_string().contains("baselineErrors"), "{error}");
    }

    #[test]
    fn cumulative_readings_become_increments_with_resets() {
        let reading = |e, r| CountIncrement {
            canary_errors: e,
            canary_requests: r,
            baseline_errors: e,
            baseline_requests: r,
        };
        let increments = differences(&[reading(1, 10), reading(3, 30), reading(2, 5)]);
        assert_eq!(increments[1].canary_errors, 2);
        assert_eq!(increments[1].canary_requests, 20);
        assert_eq!(increments[2].canary_requests, 5);
    }

    #[test]
    fn mismatched_lists_are_an_error() {
        let JudgeCommand::SequentialCounts(args) = parse(&[
            "sequential-counts",
            "--canary-errors",
            "1,2",
            "--canary-requests",
            "10",
            "--baseline-errors",
            "1,2",
            "--baseline-requests",
            "10,10",
        ]) else {
            panic!("wrong subcommand")
        };
        assert!(matches!(
            run_sequential_counts(&args),
            Err(JudgeCliError::AlignCounts { .. })
        ));
    }
}
