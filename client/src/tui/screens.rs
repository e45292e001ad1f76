//! The eight screens' bodies.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, List, ListItem, ListState, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;
use serde_json::Value;

use super::app::{App, Screen};
use super::widgets::{dissonance_color, persona_panel, personas, progress, titled, tuned};

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "–".into(),
        other => other.to_string(),
    }
}

fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

/// Society: the four personas, 2×2 (stacked when the screen is narrow).
pub fn society(f: &mut Frame, area: Rect, app: &App) {
    let names = personas();
    if area.width < 60 {
        let rows = Layout::vertical([Constraint::Ratio(1, 4); 4]).split(area);
        for (i, n) in names.iter().enumerate() {
            persona_panel(f, rows[i], app, n);
        }
        return;
    }
    let [top, bottom] = Layout::vertical([Constraint::Ratio(1, 2); 2]).areas(area);
    for (row, pair) in [top, bottom].into_iter().zip(names.chunks(2)) {
        let [l, r] = Layout::horizontal([Constraint::Ratio(1, 2); 2]).areas(row);
        persona_panel(f, l, app, pair[0]);
        persona_panel(f, r, app, pair[1]);
    }
}

/// Tasks: the table, and the selected task's steps.
pub fn tasks(f: &mut Frame, area: Rect, app: &App) {
    let [list, detail] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let rows = app.task_rows();
    let now = app.now;
    let table_rows = rows.iter().map(|(id, t)| {
        let status = s(&t["status"]);
        let color = match status.as_str() {
            "done" => Color::Green,
            "failed" => Color::Red,
            "running" => Color::Yellow,
            "paused" => Color::Magenta,
            _ => Color::Gray,
        };
        let age = match (now, t["created_at"].as_f64()) {
            (Some(n), Some(c)) => format!("{:.0}s", (n - c).max(0.0)),
            _ => "–".into(),
        };
        let origin = if t["goal"].is_string() || t["origin"] == "motivator" {
            "motivator"
        } else {
            "user"
        };
        let d = t["dissonance"].as_f64();
        Row::new(vec![
            Cell::from(short(id)),
            Cell::from(status).style(Style::new().fg(color)),
            Cell::from(origin),
            Cell::from(age),
            Cell::from(d.map(|d| format!("{d:.2}")).unwrap_or_else(|| "–".into()))
                .style(Style::new().fg(dissonance_color(d))),
            Cell::from(s(&t["steps"])),
            Cell::from(s(&t["text"])),
        ])
    });
    let mut state =
        TableState::default().with_selected(Some(app.sel().min(rows.len().saturating_sub(1))));
    let title = if app.filter.is_empty() {
        format!("tasks ({})", rows.len())
    } else {
        format!("tasks ({}) /{}", rows.len(), app.filter)
    };
    f.render_stateful_widget(
        Table::new(
            table_rows,
            [
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(5),
                Constraint::Length(5),
                Constraint::Length(5),
                Constraint::Min(10),
            ],
        )
        .header(Row::new(["id", "status", "origin", "age", "diss", "steps", "text"]).bold())
        .row_highlight_style(Style::new().reversed())
        .block(titled(&title)),
        list,
        &mut state,
    );
    let mut lines = Vec::new();
    let task = app.replies.get("task");
    let selected = app.selected_task();
    match task.filter(|t| t["id"].as_str().map(str::to_string) == selected) {
        Some(t) => {
            lines.push(Line::from(vec![Span::styled(
                s(&t["text"]),
                Style::new().bold(),
            )]));
            for st in t["steps"].as_array().into_iter().flatten() {
                let tools: Vec<String> = st["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| s(&c["name"]))
                    .collect();
                lines.push(Line::from(vec![
                    Span::styled(
                        format!(
                            "{:>2} {:<10} {:<6} ",
                            s(&st["step"]),
                            s(&st["node"]),
                            s(&st["persona"])
                        ),
                        Style::new().cyan(),
                    ),
                    Span::raw(s(&st["summary"]).replace('\n', " ")),
                    Span::styled(
                        if tools.is_empty() {
                            String::new()
                        } else {
                            format!("  [tools: {}]", tools.join(", "))
                        },
                        Style::new().magenta(),
                    ),
                ]));
            }
            if let Some(r) = t["result"].as_str() {
                lines.push(Line::from(vec![
                    Span::styled("answer: ", Style::new().green().bold()),
                    Span::raw(r.replace('\n', " ")),
                ]));
            }
            if let Some(e) = t["error"].as_str() {
                lines.push(Line::from(vec![
                    Span::styled("error: ", Style::new().red().bold()),
                    Span::raw(e.to_string()),
                ]));
            }
        }
        None => lines.push(Line::from("select a task (j/k); its steps show here").dim()),
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(titled("detail")),
        detail,
    );
}

/// Tools: the registry; a new one flashes.
pub fn tools(f: &mut Frame, area: Rect, app: &App) {
    let rows = app.tool_rows();
    let table_rows = rows.iter().map(|t| {
        let name = s(&t["name"]);
        let flash = app.flash.contains_key(&format!("tool:{name}"));
        let style = if flash {
            Style::new().black().on_green()
        } else {
            Style::new()
        };
        Row::new(vec![
            name,
            s(&t["version"]),
            s(&t["origin"]),
            s(&t["description"]),
        ])
        .style(style)
    });
    let mut state =
        TableState::default().with_selected(Some(app.sel().min(rows.len().saturating_sub(1))));
    f.render_stateful_widget(
        Table::new(
            table_rows,
            [
                Constraint::Length(22),
                Constraint::Length(4),
                Constraint::Length(10),
                Constraint::Min(10),
            ],
        )
        .header(Row::new(["name", "ver", "origin", "description"]).bold())
        .row_highlight_style(Style::new().reversed())
        .block(titled(&format!("tools ({})", rows.len()))),
        area,
        &mut state,
    );
}

/// Codex: amendments, pending first, and the selected one's change.
pub fn codex(f: &mut Frame, area: Rect, app: &App) {
    let [list, detail] =
        Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(area);
    let rows = app.amendment_rows();
    let items: Vec<ListItem> = rows
        .iter()
        .map(|a| {
            let status = s(&a["status"]);
            let color = if status == "pending" {
                Color::Yellow
            } else if status == "committed" {
                Color::Green
            } else {
                Color::Gray
            };
            ListItem::new(Line::from(vec![
                Span::raw(format!("{} ", short(&s(&a["id"])))),
                Span::styled(format!("{status:<9} "), Style::new().fg(color)),
                Span::raw(format!(
                    "{} · {}",
                    s(&a["proposal"]["persona"]),
                    s(&a["proposal"]["rationale"])
                )),
            ]))
        })
        .collect();
    let pending = rows.iter().filter(|a| a["status"] == "pending").count();
    let mut state =
        ListState::default().with_selected(Some(app.sel().min(rows.len().saturating_sub(1))));
    f.render_stateful_widget(
        List::new(items)
            .highlight_style(Style::new().reversed())
            .block(titled(&format!("amendments ({pending} pending)"))),
        list,
        &mut state,
    );
    let mut lines: Vec<Line> = Vec::new();
    if let Some(a) = rows.get(app.sel()) {
        if let Some(changes) = a["proposal"]["changes"].as_object() {
            for (k, v) in changes {
                lines.push(Line::from(vec![
                    Span::styled(format!("+ {k}: "), Style::new().green().bold()),
                    Span::styled(s(v), Style::new().green()),
                ]));
            }
        }
        for l in a["diff"].as_str().unwrap_or_default().lines() {
            let style = if l.starts_with('+') {
                Style::new().green()
            } else if l.starts_with('-') {
                Style::new().red()
            } else {
                Style::new().dim()
            };
            lines.push(Line::styled(l.to_string(), style));
        }
    } else {
        lines.push(Line::from("no amendments yet").dim());
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(titled("change")),
        detail,
    );
}

/// Inspector: one persona's live settings.
pub fn inspector(f: &mut Frame, area: Rect, app: &App) {
    let name = app.inspected_name();
    let p = app.replies.get("persona").filter(|p| p["persona"] == name);
    let mut lines = vec![Line::from(vec![
        Span::raw("persona "),
        Span::styled(name, Style::new().bold().cyan()),
        Span::raw("   (←/→ another)"),
    ])];
    match p {
        Some(p) => {
            for (k, label) in [
                ("model", "model"),
                ("backend", "backend"),
                ("generation", "generation"),
                ("temperature", "temperature"),
                ("top_p", "top_p"),
                ("max_tokens", "max_tokens"),
                ("extra_instructions", "extra instructions"),
                ("calls", "model calls"),
            ] {
                let v = if k == "model" {
                    tuned(&s(&p[k]))
                } else {
                    s(&p[k])
                };
                lines.push(Line::from(vec![
                    Span::styled(format!("{label:>20}: "), Style::new().dim()),
                    Span::raw(v),
                ]));
            }
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled(
                "system prompt",
                Style::new().bold(),
            )));
            lines.push(Line::from(s(&p["system_prompt"])));
        }
        None => lines.push(Line::from("asking the persona…").dim()),
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(titled("inspector")),
        area,
    );
}

/// Supervision: the tree with restart counts; a restarted node flashes.
pub fn supervision(f: &mut Frame, area: Rect, app: &App) {
    let mut lines = Vec::new();
    fn walk(app: &App, node: &Value, depth: usize, lines: &mut Vec<Line<'static>>) {
        let path = s(&node["path"]);
        let restarts = node["restarts"].as_u64().unwrap_or(0);
        let status = s(&node["status"]);
        let flash = app.flash.contains_key(&format!("actor:{path}"));
        let color = if flash {
            Color::Red
        } else if status == "running" {
            Color::Green
        } else {
            Color::Yellow
        };
        let mut spans = vec![
            Span::raw(format!("{}{} ", "  ".repeat(depth), s(&node["id"]))),
            Span::styled(status, Style::new().fg(color)),
        ];
        if restarts > 0 {
            spans.push(Span::styled(
                format!(" ↻{restarts}"),
                Style::new().magenta().bold(),
            ));
        }
        lines.push(Line::from(spans));
        for c in node["children"].as_array().into_iter().flatten() {
            walk(app, c, depth + 1, lines);
        }
    }
    match app.replies.get("status").map(|s| &s["tree"]) {
        Some(tree) if !tree.is_null() => walk(app, tree, 0, &mut lines),
        _ => lines.push(Line::from("asking for the tree…").dim()),
    }
    let esc = app.state.escalations;
    let tree =
        Paragraph::new(lines).block(titled(&format!("supervision tree · {esc} escalations")));
    // A home node's workers (`status.cluster`, issue 30) under the tree; a single machine shows the tree only.
    let nodes = app
        .replies
        .get("status")
        .and_then(|s| s["cluster"]["nodes"].as_array());
    let Some(nodes) = nodes else {
        f.render_widget(tree, area);
        return;
    };
    let height = (nodes.len().max(1) as u16 + 3).min(area.height / 2);
    let [top, bottom] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(height)]).areas(area);
    f.render_widget(tree, top);
    f.render_widget(node_table(app, nodes), bottom);
}

/// The worker nodes: name, roles, calls in flight, answered and failed (timed out or lost: its health), time
/// up; a node that just joined or was lost flashes.
fn node_table<'a>(app: &App, nodes: &[Value]) -> Table<'a> {
    let rows: Vec<Row> = nodes
        .iter()
        .map(|n| {
            let name = s(&n["node"]);
            let roles = n["roles"]
                .as_array()
                .map(|r| r.iter().map(s).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            let failed = n["failed"].as_u64().unwrap_or(0);
            let up = n["up_s"].as_f64().unwrap_or(0.0);
            let row = Row::new([
                name.clone(),
                roles,
                n["in_flight"].as_u64().unwrap_or(0).to_string(),
                n["answered"].as_u64().unwrap_or(0).to_string(),
                failed.to_string(),
                format!("{}m", (up / 60.0).floor()),
            ]);
            let color = if app.flash.contains_key(&format!("node:{name}")) {
                Color::Red
            } else if failed > 0 {
                Color::Yellow
            } else {
                Color::Green
            };
            row.style(Style::new().fg(color))
        })
        .collect();
    let widths = [
        Constraint::Length(12),
        Constraint::Length(18),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Min(6),
    ];
    let title = match nodes.len() {
        0 => "worker nodes · none joined".to_string(),
        n => format!("worker nodes · {n} joined"),
    };
    Table::new(rows, widths)
        .header(Row::new(["node", "roles", "in flight", "answered", "failed", "up"]).bold())
        .block(titled(&title))
}

/// Trainer and Curator: training progress, the last verdict, the datasets.
pub fn trainer(f: &mut Frame, area: Rect, app: &App) {
    let [bar, verdict, sets] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(5),
        Constraint::Min(0),
    ])
    .areas(area);
    match &app.progress {
        Some(p) => f.render_widget(progress(p).block(titled("training")), bar),
        None => {
            let fs = app.replies.get("trainer");
            let running = fs.map(|v| s(&v["running"])).unwrap_or_else(|| "–".into());
            let queued = fs
                .and_then(|v| v["queued"].as_array())
                .map(|q| q.len())
                .unwrap_or(0);
            f.render_widget(
                Paragraph::new(format!("running: {running} · queued: {queued}"))
                    .block(titled("training")),
                bar,
            );
        }
    }
    // This session's last verdict, else the daemon's record of its last run.
    let recorded = app
        .replies
        .get("trainer")
        .and_then(|f| f["last"].as_array())
        .and_then(|l| l.last())
        .map(|l| {
            let kind = if l["outcome"] == "tuned" {
                "model.tuned"
            } else {
                "trainer.rejected"
            };
            (kind.to_string(), l.clone())
        });
    let text = match app.verdict.clone().or(recorded).as_ref() {
        Some((kind, v)) => vec![
            Line::from(vec![
                Span::styled(
                    kind.clone(),
                    Style::new().bold().fg(if kind == "model.tuned" {
                        Color::Green
                    } else {
                        Color::Red
                    }),
                ),
                Span::raw(format!(" {}", s(&v["persona"]))),
            ]),
            Line::from(format!(
                "held-out NLL {:.3} → {:.3} · general {:.3} → {:.3}",
                v["heldout_before"].as_f64().unwrap_or(f64::NAN),
                v["heldout_after"].as_f64().unwrap_or(f64::NAN),
                v["general_before"].as_f64().unwrap_or(f64::NAN),
                v["general_after"].as_f64().unwrap_or(f64::NAN)
            )),
            Line::from(s(&v["model"]).to_string()).dim(),
        ],
        None => vec![Line::from("no verdict in this session").dim()],
    };
    f.render_widget(Paragraph::new(text).block(titled("last gate")), verdict);
    let stats = app
        .replies
        .get("curator")
        .and_then(|c| c["personas"].as_object().cloned())
        .unwrap_or_default();
    let rows = stats.iter().map(|(name, v)| {
        Row::new(vec![
            name.clone(),
            s(&v["seen"]),
            s(&v["accepted"]),
            s(&v["train"]),
            s(&v["heldout"]),
        ])
    });
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Length(7),
                Constraint::Length(8),
            ],
        )
        .header(Row::new(["persona", "seen", "accepted", "train", "heldout"]).bold())
        .block(titled("curator datasets")),
        sets,
    );
}

/// Events: the log with seq numbers; resyncs and disconnects stand out.
pub fn events(f: &mut Frame, area: Rect, app: &App) {
    let height = area.height.saturating_sub(2) as usize;
    let end = app.log.len().saturating_sub(app.sel().min(app.log.len()));
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = app
        .log
        .iter()
        .skip(start)
        .take(end - start)
        .filter(|l| {
            app.filter.is_empty() || l.kind.contains(&app.filter) || l.text.contains(&app.filter)
        })
        .map(|l| {
            if l.seq == 0 {
                Line::styled(
                    format!("──── {}: {} ────", l.kind, l.text),
                    Style::new().black().on_yellow(),
                )
            } else {
                Line::from(vec![
                    Span::styled(format!("{:>6} ", l.seq), Style::new().dim()),
                    Span::styled(format!("{:<20} ", l.kind), Style::new().cyan()),
                    Span::raw(l.text.clone()),
                ])
            }
        })
        .collect();
    let title = format!("events · {} resyncs", app.resyncs);
    f.render_widget(Paragraph::new(lines).block(titled(&title)), area);
    let _ = Screen::Events;
}
