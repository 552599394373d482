//! The capacity report's plots: x is the offered rate (or N for the USL), with reference lines
//! (the ideal, an SLO limit, the knee, the answer).

use plotters::prelude::*;
use plotters::style::RGBColor;

use crate::plots::{font, PALETTE};

const SIZE: (u32, u32) = (960, 360);

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Points joined by a line.
    Line,
    /// Points only.
    Points,
    /// A dashed line (a reference or a fit).
    Dashed,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub color: RGBColor,
    pub mark: Mark,
    pub points: Vec<(f64, f64)>,
}

/// One x-y plot.
#[derive(Debug, Clone)]
pub struct XyPlot {
    /// File stem under `plots/`.
    pub name: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Vertical lines: x, label.
    pub vlines: Vec<(f64, String)>,
    /// Horizontal lines: y, label (an SLO limit).
    pub hlines: Vec<(f64, String)>,
}

pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, p: &XyPlot) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let xs = p.series.iter().flat_map(|s| s.points.iter().map(|q| q.0)).chain(p.vlines.iter().map(|v| v.0));
    let ys = p.series.iter().flat_map(|s| s.points.iter().map(|q| q.1)).chain(p.hlines.iter().map(|h| h.0));
    let x_max = xs.filter(|v| v.is_finite()).fold(0.0f64, f64::max).max(1.0) * 1.05;
    let y_max = ys.filter(|v| v.is_finite()).fold(0.0f64, f64::max).max(1e-3) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(&p.title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(p.x_label.as_str())
        .y_desc(p.y_label.as_str())
        .label_style(("sans-serif", 12))
        .y_label_formatter(&|v| if y_max <= 2.0 { format!("{v:.2}") } else { format!("{v:.0}") })
        .draw()
        .map_err(e)?;
    let grey = RGBColor(120, 120, 120);
    // Labels staggered downwards: lines close together stay readable.
    for (k, (x, label)) in p.vlines.iter().enumerate() {
        chart
            .draw_series(DashedLineSeries::new([(*x, 0.0), (*x, y_max)], 5, 4, grey.stroke_width(1)))
            .map_err(e)?;
        let y = y_max * (0.97 - 0.07 * (k % 6) as f64);
        chart
            .draw_series([Text::new(format!(" {label}"), (*x, y), ("sans-serif", 11).into_font().color(&grey))])
            .map_err(e)?;
    }
    let red = RGBColor(211, 47, 47);
    for (y, label) in &p.hlines {
        chart.draw_series(DashedLineSeries::new([(0.0, *y), (x_max, *y)], 6, 4, red.stroke_width(1))).map_err(e)?;
        chart
            .draw_series([Text::new(label.clone(), (x_max * 0.01, *y), ("sans-serif", 11).into_font().color(&red))])
            .map_err(e)?;
    }
    for s in &p.series {
        let c = s.color;
        let mut pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|q| q.0.is_finite() && q.1.is_finite()).collect();
        if s.mark != Mark::Points {
            pts = mean_per_x(pts);
        }
        if pts.is_empty() {
            continue;
        }
        match s.mark {
            Mark::Line => {
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                    .map_err(e)?
                    .label(&s.label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
                chart.draw_series(pts.iter().map(|q| Circle::new(*q, 3, c.filled()))).map_err(e)?;
            }
            Mark::Points => {
                chart
                    .draw_series(pts.iter().map(|q| Circle::new(*q, 4, c.filled())))
                    .map_err(e)?
                    .label(&s.label)
                    .legend(move |(x, y)| Circle::new((x + 8, y), 4, c.filled()));
            }
            Mark::Dashed => {
                chart
                    .draw_series(DashedLineSeries::new(pts.iter().copied(), 6, 4, c.stroke_width(1)))
                    .map_err(e)?
                    .label(&s.label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
            }
        }
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 11))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Sorted by x, the points at the same x averaged (repeated trials at one rate).
fn mean_per_x(mut pts: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(f64, f64, f64)> = Vec::new();
    for (x, y) in pts {
        match out.last_mut() {
            Some(l) if (l.0 - x).abs() < 1e-9 => {
                l.1 += y;
                l.2 += 1.0;
            }
            _ => out.push((x, y, 1.0)),
        }
    }
    out.into_iter().map(|(x, s, n)| (x, s / n)).collect()
}

pub fn svg(p: &XyPlot) -> Result<String, String> {
    font()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        draw(root, p)?;
    }
    Ok(out)
}

pub fn png(p: &XyPlot, path: &std::path::Path) -> Result<(), String> {
    font()?;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    draw(root, p)
}
