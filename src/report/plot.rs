//! The report's charts as inline SVG, drawn with plotters' SVG backend (no fonts loaded: the
//! SVG names a font family and the browser draws the text).

use jiff::{SignedDuration, Timestamp};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::ReportError;
use super::series::{MetricSeries, Point, Reference};
use crate::api::AnalysisPhase;

const SIZE: (u32, u32) = (760, 280);
const CANARY: RGBColor = RGBColor(0x1f, 0x5f, 0xbf);
const BASELINE: RGBColor = RGBColor(0x70, 0x70, 0x70);
const REFERENCE: RGBColor = RGBColor(0xb0, 0x40, 0x90);

/// The colour of a verdict, as the page's legend names it.
pub fn verdict_colour(verdict: AnalysisPhase) -> RGBColor {
    match verdict {
        AnalysisPhase::Successful => RGBColor(0x2e, 0x7d, 0x32),
        AnalysisPhase::Failed => RGBColor(0xc6, 0x28, 0x28),
        AnalysisPhase::Inconclusive => RGBColor(0xe0, 0x8a, 0x00),
        AnalysisPhase::Error => RGBColor(0x6a, 0x1b, 0x9a),
        _ => RGBColor(0x60, 0x7d, 0x8b),
    }
}

/// Seconds from `t0` to `at`.
fn offset(t0: Timestamp, at: Timestamp) -> f64 {
    at.duration_since(t0).as_secs_f64()
}

fn clock(t0: Timestamp, seconds: f64) -> String {
    SignedDuration::try_from_secs_f64(seconds)
        .ok()
        .and_then(|d| t0.checked_add(d).ok())
        .map_or_else(String::new, |t| t.strftime("%H:%M:%S").to_string())
}

fn drawing_error(what: &str) -> impl Fn(DrawingAreaErrorKind<std::io::Error>) -> ReportError {
    let what = what.to_owned();
    move |error| ReportError::DrawPlot {
        what: what.clone(),
        message: error.to_string(),
    }
}

/// The largest magnitude a chart's axis spans. Values come from query answers and judges'
/// texts (a ratio over a baseline without errors is near `f64::MAX`); plotters' tick search
/// does not finish on a range near the largest float, so larger values are drawn at the edge.
const DRAWN_LIMIT: f64 = 1e12;

/// `value` within the range a chart can draw.
fn drawable(value: f64) -> f64 {
    value.clamp(-DRAWN_LIMIT, DRAWN_LIMIT)
}

/// A padded range around `values` (and 0..1 when there are none).
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (low, high) = values
        .filter(|v| v.is_finite())
        .map(drawable)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !low.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((high - low) * 0.1)
        .max(high.abs().max(low.abs()) * 0.05)
        .max(1e-6);
    (low - pad, high + pad)
}

fn time_span(points: &[Point], t0: Timestamp) -> (f64, f64) {
    let (first, last) = span(points.iter().map(|p| offset(t0, p.at)));
    if last - first < 60.0 {
        (first - 30.0, last + 30.0)
    } else {
        (first, last)
    }
}

/// The canary (and baseline) values over time, each measurement marked by its verdict, with
/// the threshold lines. `None` when no measurement has a number to draw.
pub fn values_chart(metric: &MetricSeries, t0: Timestamp) -> Result<Option<String>, ReportError> {
    let canary: Vec<(f64, f64, AnalysisPhase)> = metric
        .points
        .iter()
        .filter_map(|p| p.canary.map(|v| (offset(t0, p.at), v, p.verdict)))
        .filter(|(_, v, _)| v.is_finite())
        .map(|(t, v, verdict)| (t, drawable(v), verdict))
        .collect();
    if canary.is_empty() {
        return Ok(None);
    }
    let baseline: Vec<(f64, f64)> = metric
        .points
        .iter()
        .filter_map(|p| p.baseline.map(|v| (offset(t0, p.at), v)))
        .filter(|(_, v)| v.is_finite())
        .map(|(t, v)| (t, drawable(v)))
        .collect();
    let y = span(
        canary
            .iter()
            .map(|c| c.1)
            .chain(baseline.iter().map(|b| b.1))
            .chain(metric.value_references.iter().map(|r| r.value)),
    );
    let x = time_span(&metric.points, t0);
    let what = format!("{} values", metric.name);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw_values(&root, metric, t0, x, y, &canary, &baseline).map_err(drawing_error(&what))?;
    }
    Ok(Some(svg))
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

#[allow(clippy::too_many_arguments)]
fn draw_values(
    root: &Area<'_>,
    metric: &MetricSeries,
    t0: Timestamp,
    x: (f64, f64),
    y: (f64, f64),
    canary: &[(f64, f64, AnalysisPhase)],
    baseline: &[(f64, f64)],
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    root.fill(&WHITE)?;
    let y_label = crate::report::series::value_label(metric.kind);
    let mut chart = ChartBuilder::on(root)
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|s| clock(t0, *s))
        .y_desc(y_label)
        .light_line_style(WHITE)
        .draw()?;
    draw_references(&mut chart, &metric.value_references, x)?;
    if !baseline.is_empty() {
        chart
            .draw_series(LineSeries::new(
                baseline.iter().copied(),
                BASELINE.stroke_width(2),
            ))?
            .label("baseline")
            .legend(|(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 18, ly)], BASELINE));
    }
    chart
        .draw_series(LineSeries::new(
            canary.iter().map(|(t, v, _)| (*t, *v)),
            CANARY.stroke_width(2),
        ))?
        .label("canary")
        .legend(|(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 18, ly)], CANARY));
    chart.draw_series(
        canary
            .iter()
            .map(|(t, v, verdict)| Circle::new((*t, *v), 5, verdict_colour(*verdict).filled())),
    )?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

fn draw_references(
    chart: &mut Chart<'_, '_>,
    references: &[Reference],
    x: (f64, f64),
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    for reference in references {
        let label = reference.label.clone();
        chart
            .draw_series(LineSeries::new(
                [
                    (x.0, drawable(reference.value)),
                    (x.1, drawable(reference.value)),
                ],
                REFERENCE.stroke_width(1),
            ))?
            .label(label)
            .legend(|(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 18, ly)], REFERENCE));
    }
    Ok(())
}

/// A statistical judge's estimate and its interval at each measurement (an infinite bound is
/// drawn to the chart's edge), with the judge's reference lines. `None` when no measurement
/// has an interval.
pub fn estimate_chart(metric: &MetricSeries, t0: Timestamp) -> Result<Option<String>, ReportError> {
    let intervals: Vec<(f64, Option<f64>, f64, f64, AnalysisPhase)> = metric
        .points
        .iter()
        .filter_map(|p| {
            p.estimate
                .map(|e| (offset(t0, p.at), e.value, e.lower, e.upper, p.verdict))
        })
        .collect();
    if intervals.is_empty() {
        return Ok(None);
    }
    let y = span(
        intervals
            .iter()
            .flat_map(|(_, v, lo, hi, _)| [v.unwrap_or(*lo), *lo, *hi])
            .chain(metric.estimate_references.iter().map(|r| r.value)),
    );
    let x = time_span(&metric.points, t0);
    let what = format!("{} estimate", metric.name);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw_estimate(&root, metric, t0, x, y, &intervals).map_err(drawing_error(&what))?;
    }
    Ok(Some(svg))
}

fn draw_estimate(
    root: &Area<'_>,
    metric: &MetricSeries,
    t0: Timestamp,
    x: (f64, f64),
    y: (f64, f64),
    intervals: &[(f64, Option<f64>, f64, f64, AnalysisPhase)],
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|s| clock(t0, *s))
        .y_desc(match metric.kind {
            super::series::JudgeKind::MannWhitney => "shift canary − baseline",
            _ => "ratio canary / baseline",
        })
        .light_line_style(WHITE)
        .draw()?;
    draw_references(&mut chart, &metric.estimate_references, x)?;
    let clamp = |v: f64| v.clamp(y.0, y.1);
    chart
        .draw_series(intervals.iter().map(|(t, _, lo, hi, verdict)| {
            PathElement::new(
                vec![(*t, clamp(*lo)), (*t, clamp(*hi))],
                verdict_colour(*verdict).stroke_width(3),
            )
        }))?
        .label("interval")
        .legend(|(lx, ly)| PathElement::new(vec![(lx + 9, ly - 6), (lx + 9, ly + 6)], CANARY));
    chart
        .draw_series(intervals.iter().filter_map(|(t, v, _, _, verdict)| {
            v.map(|v| Circle::new((*t, clamp(v)), 5, verdict_colour(*verdict).filled()))
        }))?
        .label("estimate")
        .legend(|(lx, ly)| Circle::new((lx + 9, ly), 4, CANARY.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::series::{Estimate, JudgeKind};

    /// Runs `draw` on its own thread: a chart that does not finish fails the test instead of
    /// hanging it (the deadline is generous; drawing takes milliseconds).
    fn drawn_within_a_minute(
        draw: impl FnOnce() -> Result<Option<String>, ReportError> + Send + 'static,
    ) -> String {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || sender.send(draw()));
        receiver
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the chart was not drawn within a minute")
            .expect("drawn")
            .expect("a chart")
    }

    fn series_with(estimates: &[(Option<f64>, f64, f64)]) -> MetricSeries {
        let t0 = Timestamp::from_second(1_772_359_200).expect("time");
        let points = estimates
            .iter()
            .zip(0i64..)
            .map(|(&(value, lower, upper), i)| Point {
                at: t0 + SignedDuration::from_secs(3 * i),
                verdict: AnalysisPhase::Running,
                canary: Some(0.25),
                baseline: Some(0.0),
                estimate: Some(Estimate {
                    value,
                    lower,
                    upper,
                }),
                counts: None,
                reason: String::new(),
            })
            .collect();
        MetricSeries {
            name: "errors".to_owned(),
            kind: JudgeKind::SequentialCounts,
            phase: AnalysisPhase::Failed,
            message: None,
            points,
            count: 3,
            value_references: Vec::new(),
            estimate_references: Vec::new(),
        }
    }

    /// A ratio over a baseline with no errors is near f64::MAX (the judge's prior keeps it
    /// finite): the chart is still drawn, in bounded time.
    #[test]
    fn an_estimate_near_the_largest_float_is_drawn() {
        let metric = series_with(&[
            (Some(1.515e308), 0.1003, f64::INFINITY),
            (Some(f64::MAX), 1.41, f64::INFINITY),
            (None, f64::MIN, f64::MAX),
        ]);
        let t0 = metric.points[0].at;
        let svg = drawn_within_a_minute(move || estimate_chart(&metric, t0));
        assert!(svg.contains("<svg"));
    }

    /// A query answer near the largest float (whoever answers the query chooses it) is drawn
    /// at the edge of the values chart, in bounded time.
    #[test]
    fn a_value_near_the_largest_float_is_drawn() {
        let mut metric = series_with(&[(None, 0.0, 1.0), (None, 0.0, 1.0)]);
        metric.points[0].canary = Some(f64::MAX);
        metric.points[1].canary = Some(f64::MIN);
        metric.points[1].baseline = Some(1.7e308);
        let t0 = metric.points[0].at;
        let svg = drawn_within_a_minute(move || values_chart(&metric, t0));
        assert!(svg.contains("<svg"));
    }
}
