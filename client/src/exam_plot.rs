//! The exam history as a chart (`batos exam plot`): one line per category of the society's score over the
//! runs, the society's and the bare model's overall scores drawn thicker, each run a point. SVG, drawn by
//! plotters (the same build of it criterion's reports use).

use std::path::Path;

use batos_protocol::exam::ExamSummary;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// One line of the chart: its label, its points (run number, percent) and its style.
pub(crate) type Series = (String, Vec<(f64, f64)>, ShapeStyle);

/// Draws `runs` (oldest first) into `file` (`.svg`). An error says what was wrong in words.
pub fn draw(runs: &[ExamSummary], file: &Path) -> Result<(), String> {
    if runs.is_empty() {
        return Err("no finished exam run to draw (batos exam history lists them)".into());
    }
    svg(file, |root| draw_on(root, runs))
}

/// The drawing area both charts draw on (the exam history, a life report).
pub(crate) type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// Draws a chart into `file`, which must end in `.svg`, at 1000×560; errors in words naming the file.
pub(crate) fn svg(
    file: &Path,
    draw: impl FnOnce(&Area<'_>) -> Result<(), DrawingAreaErrorKind<std::io::Error>>,
) -> Result<(), String> {
    if !file
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
    {
        return Err(format!(
            "{}: the chart is drawn as SVG; give a file name ending in .svg",
            file.display()
        ));
    }
    let root = SVGBackend::new(file, (1000, 560)).into_drawing_area();
    draw(&root).map_err(|e| format!("cannot draw {}: {e}", file.display()))?;
    root.present()
        .map_err(|e| format!("cannot write {}: {e}", file.display()))
}

/// Draws each series as a labelled line with a dot at each point, then the legend (lower right).
pub(crate) fn lines<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    series: Vec<Series>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for (label, points, style) in series {
        chart
            .draw_series(LineSeries::new(points.clone(), style))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, style.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

fn draw_on<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    runs: &[ExamSummary],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let n = runs.len() as f64;
    let mut chart = ChartBuilder::on(root)
        .caption("batos exam: share of questions right", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(52)
        .build_cartesian_2d(0.5f64..n + 0.5, 0f64..100f64)?;
    chart
        .configure_mesh()
        .x_desc("run (oldest first)")
        .y_desc("% right")
        .x_labels(runs.len().min(20))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    let mut categories: Vec<String> = Vec::new();
    for r in runs {
        for c in &r.categories {
            if !categories.contains(&c.category) {
                categories.push(c.category.clone());
            }
        }
    }
    let mut series: Vec<Series> = Vec::new();
    for (i, cat) in categories.iter().enumerate() {
        let points = runs
            .iter()
            .enumerate()
            .filter_map(|(x, r)| {
                r.categories
                    .iter()
                    .find(|c| &c.category == cat && c.n > 0)
                    .map(|c| (x as f64 + 1.0, c.society_pct()))
            })
            .collect();
        series.push((cat.clone(), points, Palette99::pick(i + 2).stroke_width(1)));
    }
    let overall = runs
        .iter()
        .enumerate()
        .map(|(x, r)| (x as f64 + 1.0, r.society_pct))
        .collect();
    series.push(("society overall".into(), overall, BLUE.stroke_width(4)));
    let bare: Vec<(f64, f64)> = runs
        .iter()
        .enumerate()
        .filter_map(|(x, r)| r.bare_pct.map(|b| (x as f64 + 1.0, b)))
        .collect();
    if !bare.is_empty() {
        series.push((
            "bare model overall".into(),
            bare,
            BLACK.mix(0.6).stroke_width(4),
        ));
    }
    lines(&mut chart, series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use batos_protocol::exam::CategoryScore;

    fn run(soc: u32, bare: u32) -> ExamSummary {
        ExamSummary {
            status: "done".into(),
            done: 10,
            total: 10,
            baseline: true,
            categories: vec![
                CategoryScore {
                    category: "fact".into(),
                    n: 5,
                    society: soc.min(5),
                    bare: Some(bare.min(5)),
                },
                CategoryScore {
                    category: "recall".into(),
                    n: 5,
                    society: soc.saturating_sub(5),
                    bare: Some(0),
                },
            ],
            society_pct: f64::from(soc) * 10.0,
            bare_pct: Some(f64::from(bare) * 10.0),
            ..Default::default()
        }
    }

    #[test]
    fn the_history_is_drawn_as_svg_with_every_series_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("history.svg");
        draw(&[run(4, 3), run(7, 3), run(9, 4)], &file).unwrap();
        let svg = std::fs::read_to_string(&file).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        for label in [
            "fact",
            "recall",
            "society overall",
            "bare model overall",
            "% right",
        ] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert!(draw(&[], &file).unwrap_err().contains("no finished"));
        assert!(draw(&[run(1, 1)], &dir.path().join("x.png"))
            .unwrap_err()
            .contains(".svg"));
    }
}
