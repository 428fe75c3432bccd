//! The bench's picture (`fizzbuzz bench --plot PATH`): one SVG of two panels — the
//! latency percentiles of one call at a time for tonic unary, one tonic stream and the
//! grain call, and the throughput of each against the calls in flight. Drawn with
//! `plotters`' SVG backend alone: text is SVG `<text>`, laid out by the viewer, so no
//! font is read here.

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use serde::Serialize;

use super::baseline::Percentiles;
use crate::AppError;

/// One series of the latency panel.
#[derive(Clone, Debug, Serialize)]
pub struct LatencySeries {
    /// What was measured (the legend).
    pub name: &'static str,
    /// Its percentiles, ms (each the median over the runs).
    pub ms: Percentiles,
}

/// One series of the throughput panel.
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputSeries {
    /// What was measured (the legend).
    pub name: &'static str,
    /// `(calls in flight, calls per second)`, by calls in flight.
    pub points: Vec<(usize, f64)>,
}

/// What the picture shows. The latency series are each percentile's median over the
/// runs of the serial figures; a throughput point is one run, but for tonic unary and
/// the stream at 256 in flight and the grain call at 1, which are the medians of the
/// figures measuring the same thing.
#[derive(Clone, Debug, Serialize)]
pub struct Curves {
    /// Latency at one call in flight, one series each.
    pub latency: Vec<LatencySeries>,
    /// Calls in flight of the throughput panel, in order.
    pub inflight: Vec<usize>,
    /// Calls per second against calls in flight, one series each.
    pub throughput: Vec<ThroughputSeries>,
}

/// The colours of the series, in the order they are given.
const COLOURS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];

/// The percentile names of the latency panel's axis.
const PERCENTILES: [&str; 4] = ["p50", "p90", "p99", "max"];

/// A log axis holding every value of `values` (positive ones), with some room.
fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo.is_finite() && hi > 0.0 {
        lo * 0.7..hi * 1.5
    } else {
        0.001..1.0
    }
}

/// A log axis tick: three significant digits at most, no trailing zeros.
fn tick(v: f64) -> String {
    let digits = if v >= 100.0 {
        0
    } else if v >= 1.0 {
        1
    } else if v >= 0.1 {
        2
    } else {
        3
    };
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The axis of `n` categories: segments `0..n-1` (a segmented range holds its end).
fn categories(n: usize) -> Result<std::ops::Range<i32>, String> {
    let last = i32::try_from(n.saturating_sub(1)).map_err(|e| e.to_string())?;
    Ok(0..last)
}

fn failed(path: &Path) -> impl Fn(String) -> AppError + '_ {
    move |e| AppError::Failed(format!("--plot {}: cannot draw: {e}", path.display()))
}

/// A segment's label: `names[i]` at the centre of segment `i`, nothing elsewhere.
fn segment_label(names: &[String], v: &SegmentValue<i32>) -> String {
    match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => usize::try_from(*i)
            .ok()
            .and_then(|i| names.get(i))
            .cloned()
            .unwrap_or_default(),
        SegmentValue::Last => String::new(),
    }
}

/// Writes the picture of `curves` to `path` as SVG.
pub fn write_svg(curves: &Curves, path: &Path) -> Result<(), AppError> {
    draw(curves, path).map_err(failed(path))?;
    // plotters reports some write errors only on stderr: check the file is there.
    let written = std::fs::metadata(path)
        .map_err(|e| AppError::Failed(format!("--plot {}: {e}", path.display())))?;
    if written.len() == 0 {
        return Err(AppError::Failed(format!(
            "--plot {}: nothing was written",
            path.display()
        )));
    }
    Ok(())
}

/// A panel: percentiles or calls in flight across, log values up.
type Panel<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<
        plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordi32>,
        plotters::coord::combinators::LogCoord<f64>,
    >,
>;

/// Draws one series on `chart`: its line, its points and its legend entry.
fn curve(
    chart: &mut Panel<'_, '_>,
    points: Vec<(SegmentValue<i32>, f64)>,
    name: &'static str,
    colour: RGBColor,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    chart
        .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
        .map_err(e)?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    chart
        .draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 4, colour.filled())),
        )
        .map_err(e)?;
    Ok(())
}

/// The legend of `chart`'s series.
fn legend<'b>(chart: &mut Panel<'b, 'b>) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

fn draw(curves: &Curves, path: &Path) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (left, right) = root.split_horizontally(600);

    // (a) latency percentiles at one call in flight, log ms.
    let names: Vec<String> = PERCENTILES.iter().map(|s| s.to_string()).collect();
    let y = log_range(curves.latency.iter().flat_map(|s| {
        let p = s.ms;
        [p.p50, p.p90, p.p99, p.max]
    }));
    let mut chart = ChartBuilder::on(&left)
        .caption("Latency, one call in flight", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(65)
        .build_cartesian_2d(
            categories(PERCENTILES.len())?.into_segmented(),
            y.log_scale(),
        )
        .map_err(e)?;
    let label = |v: &SegmentValue<i32>| segment_label(&names, v);
    chart
        .configure_mesh()
        .x_labels(PERCENTILES.len())
        .x_label_formatter(&label)
        .x_desc("percentile")
        .y_desc("latency (ms, log scale)")
        .y_label_formatter(&|v| tick(*v))
        .draw()
        .map_err(e)?;
    for (series, colour) in curves.latency.iter().zip(COLOURS) {
        let p = series.ms;
        let points: Vec<(SegmentValue<i32>, f64)> = [p.p50, p.p90, p.p99, p.max]
            .into_iter()
            .enumerate()
            .filter(|(_, v)| *v > 0.0)
            .filter_map(|(i, v)| Some((SegmentValue::CenterOf(i32::try_from(i).ok()?), v)))
            .collect();
        curve(&mut chart, points, series.name, colour)?;
    }
    legend(&mut chart)?;

    // (b) throughput against calls in flight: segments spaced as the counts (×4 each:
    // a log axis), log calls/s.
    let names: Vec<String> = curves.inflight.iter().map(|n| n.to_string()).collect();
    let y = log_range(
        curves
            .throughput
            .iter()
            .flat_map(|s| s.points.iter().map(|(_, v)| *v)),
    );
    let mut chart = ChartBuilder::on(&right)
        .caption("Throughput against calls in flight", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(75)
        .build_cartesian_2d(categories(names.len())?.into_segmented(), y.log_scale())
        .map_err(e)?;
    let label = |v: &SegmentValue<i32>| segment_label(&names, v);
    chart
        .configure_mesh()
        .x_labels(names.len())
        .x_label_formatter(&label)
        .x_desc("calls in flight")
        .y_desc("calls/s (log scale)")
        .y_label_formatter(&|v| tick(*v))
        .draw()
        .map_err(e)?;
    for (series, colour) in curves.throughput.iter().zip(COLOURS) {
        let points: Vec<(SegmentValue<i32>, f64)> = series
            .points
            .iter()
            .filter(|(_, v)| *v > 0.0)
            .filter_map(|(n, v)| {
                let i = curves.inflight.iter().position(|m| m == n)?;
                Some((SegmentValue::CenterOf(i32::try_from(i).ok()?), *v))
            })
            .collect();
        curve(&mut chart, points, series.name, colour)?;
    }
    legend(&mut chart)?;
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_have_three_significant_digits_at_most() {
        assert_eq!(tick(0.6000000000000001), "0.6");
        assert_eq!(tick(0.126), "0.13");
        assert_eq!(tick(0.05), "0.05");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(100000.0), "100000");
    }

    #[test]
    fn the_picture_is_an_svg_naming_every_series() {
        let p = |base: f64| Percentiles {
            p50: base,
            p90: base * 1.5,
            p99: base * 3.0,
            max: base * 10.0,
        };
        let curves = Curves {
            latency: vec![
                LatencySeries {
                    name: "tonic unary",
                    ms: p(0.1),
                },
                LatencySeries {
                    name: "grain call",
                    ms: p(0.2),
                },
            ],
            inflight: vec![1, 4, 16],
            throughput: vec![ThroughputSeries {
                name: "tonic unary",
                points: vec![(1, 8000.0), (4, 20000.0), (16, 0.0)],
            }],
        };
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("bench.svg");
        write_svg(&curves, &path).unwrap_or_else(|e| panic!("{e}"));
        let svg = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(svg.starts_with("<svg"), "{svg}");
        for text in ["tonic unary", "grain call", "p99", "calls in flight", "16"] {
            assert!(svg.contains(text), "{text} missing");
        }
        let nowhere = dir.path().join("no/such/dir/bench.svg");
        assert!(write_svg(&curves, &nowhere).is_err());
    }
}
