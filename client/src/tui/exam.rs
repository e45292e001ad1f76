//! The Exam screen: the running exam's progress (from `exam.progress` events) and every kept run, newest
//! first, with the society's and the bare model's scores per category (`exam_history`).

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Gauge, Paragraph, Row, Table, TableState};
use ratatui::Frame;
use serde_json::Value;

use super::app::App;
use super::widgets::titled;

fn pct(v: &Value) -> String {
    v.as_f64()
        .map(|p| format!("{p:.0}%"))
        .unwrap_or_else(|| "–".into())
}

/// The category cells of a run: `fact 79/75` (society/bare %), or the society's alone.
fn categories(run: &Value) -> String {
    run["categories"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let n = c["n"].as_f64().unwrap_or(0.0).max(1.0);
            let soc = c["society"].as_f64().unwrap_or(0.0) * 100.0 / n;
            match c["bare"].as_f64() {
                Some(b) => format!(
                    "{} {soc:.0}/{:.0}",
                    c["category"].as_str().unwrap_or("?"),
                    b * 100.0 / n
                ),
                None => format!("{} {soc:.0}", c["category"].as_str().unwrap_or("?")),
            }
        })
        .collect::<Vec<_>>()
        .join("  ")
}

/// Draws the Exam screen.
pub fn exam(f: &mut Frame, area: Rect, app: &App) {
    let [live, runs] = Layout::vertical([Constraint::Length(4), Constraint::Min(0)]).areas(area);
    match &app.exam {
        Some(e) => {
            let [bar, text] = Layout::vertical([Constraint::Length(1), Constraint::Length(1)])
                .areas(titled("running exam").inner(live));
            f.render_widget(
                titled(&format!("running exam {}", &e.id[..e.id.len().min(8)])),
                live,
            );
            f.render_widget(
                Gauge::default()
                    .ratio((f64::from(e.done) / f64::from(e.total.max(1))).clamp(0.0, 1.0))
                    .label(format!("{} {}/{}", e.phase, e.done, e.total))
                    .gauge_style(Style::new().fg(Color::Cyan)),
                bar,
            );
            let score = if e.seen > 0 {
                format!(
                    " · this session: society {}/{} right, bare {}/{}",
                    e.right, e.seen, e.bare_right, e.seen
                )
            } else {
                String::new()
            };
            f.render_widget(Paragraph::new(format!("{}{score}", e.last)), text);
        }
        None => f.render_widget(
            Paragraph::new(
                Line::from("no exam running · start one with batos exam run FILE --baseline bare")
                    .dim(),
            )
            .block(titled("running exam")),
            live,
        ),
    }
    let rows: Vec<Row> = app
        .exam_rows()
        .iter()
        .map(|r| {
            let status = r["status"].as_str().unwrap_or("?").to_string();
            let style = match status.as_str() {
                "running" => Style::new().cyan(),
                "failed" | "cancelled" => Style::new().red(),
                _ => Style::new(),
            };
            Row::new(vec![
                r["id"]
                    .as_str()
                    .unwrap_or("?")
                    .chars()
                    .take(8)
                    .collect::<String>(),
                r["name"].as_str().unwrap_or("?").chars().take(16).collect(),
                status,
                format!("{}/{}", r["done"], r["total"]),
                pct(&r["society_pct"]),
                pct(&r["bare_pct"]),
                r["leaks"].to_string(),
                categories(r),
            ])
            .style(style)
        })
        .collect();
    let n = rows.len();
    let mut sel = TableState::default().with_selected((n > 0).then(|| app.sel().min(n - 1)));
    f.render_stateful_widget(
        Table::new(
            rows,
            [
                Constraint::Length(8),
                Constraint::Length(16),
                Constraint::Length(9),
                Constraint::Length(7),
                Constraint::Length(7),
                Constraint::Length(5),
                Constraint::Length(5),
                Constraint::Min(10),
            ],
        )
        .header(
            Row::new([
                "id",
                "name",
                "status",
                "done",
                "society",
                "bare",
                "leaks",
                "per category (society/bare %)",
            ])
            .bold(),
        )
        .row_highlight_style(Style::new().reversed())
        .block(titled(&format!("exam runs · {n} kept"))),
        runs,
        &mut sel,
    );
}
