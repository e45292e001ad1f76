//! Drawing: a header (screens, seq, counts, link), the screen, a footer (hints, the input line or the last
//! outcome), and the overlays (help, confirmation, disconnected). Pure functions of [`App`]; every width is
//! clamped, so any terminal size down to a few cells draws without a panic (80×24 is the design size).

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, BorderType, Borders, Clear, Gauge, Paragraph, Row, Sparkline, Table, Wrap,
};
use ratatui::Frame;
use serde_json::Value;

use super::app::{status_word, App, Mode, Screen, PERSONAS};
use super::keys::{hints, HELP};

/// Draws the whole TUI.
pub fn render(f: &mut Frame, app: &App) {
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(f.area());
    header(f, head, app);
    match app.screen {
        Screen::Society => super::screens::society(f, body, app),
        Screen::Tasks => super::screens::tasks(f, body, app),
        Screen::Tools => super::screens::tools(f, body, app),
        Screen::Codex => super::screens::codex(f, body, app),
        Screen::Inspector => super::screens::inspector(f, body, app),
        Screen::Supervision => super::screens::supervision(f, body, app),
        Screen::Trainer => super::screens::trainer(f, body, app),
        Screen::Events => super::screens::events(f, body, app),
        Screen::Exam => super::exam::exam(f, body, app),
    }
    footer(f, foot, app);
    match &app.mode {
        Mode::Help => help(f, app),
        Mode::Confirm { prompt, .. } => dialog(
            f,
            "confirm",
            &format!("{prompt}\n\ny: yes · any other key: no"),
            Color::Yellow,
        ),
        _ => {}
    }
    if !app.connected {
        dialog(
            f,
            "disconnected",
            "No heartbeat from the daemon for three periods.\nReconnecting; the state will be reloaded\nfrom a snapshot when it answers.",
            Color::Red,
        );
    }
}

fn header(f: &mut Frame, area: Rect, app: &App) {
    let mut spans = vec![Span::styled(" batos ", Style::new().bold().reversed())];
    // Every tab named when there is room (110 columns); else numbers, the shown screen named.
    let wide = area.width >= 110;
    for (i, s) in Screen::ALL.iter().enumerate() {
        let shown = *s == app.screen;
        let style = if shown {
            Style::new().bold().underlined().cyan()
        } else {
            Style::new().dim()
        };
        let label = if wide || shown {
            format!(" {}:{}", i + 1, s.title())
        } else {
            format!(" {}", i + 1)
        };
        spans.push(Span::styled(label, style));
    }
    let running = app
        .state
        .tasks
        .values()
        .filter(|t| status_word(&t.status) == "running")
        .count();
    let link = if app.connected {
        Span::styled(" ● ", Style::new().green())
    } else {
        Span::styled(" ○ ", Style::new().red())
    };
    spans.push(Span::raw(format!(
        "  seq {} · {} running",
        app.seq, running
    )));
    if app.readonly {
        spans.push(Span::styled(" read-only", Style::new().yellow()));
    }
    spans.push(link);
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn footer(f: &mut Frame, area: Rect, app: &App) {
    let line = match &app.mode {
        Mode::Command(t) => Line::from(vec![
            Span::styled(":", Style::new().bold()),
            Span::raw(t.clone()),
            cursor(app),
        ]),
        Mode::Filter(t) => Line::from(vec![
            Span::styled("/", Style::new().bold()),
            Span::raw(t.clone()),
            cursor(app),
        ]),
        Mode::Input { purpose, text } => Line::from(vec![
            Span::styled(format!("{purpose}: "), Style::new().bold()),
            Span::raw(text.clone()),
            cursor(app),
        ]),
        _ => match &app.message {
            Some(m) => Line::from(vec![
                Span::styled(m.clone(), Style::new().yellow()),
                Span::raw("  "),
                Span::styled(hints(app), Style::new().dim()),
            ]),
            None => Line::from(Span::styled(hints(app), Style::new().dim())),
        },
    };
    f.render_widget(Paragraph::new(line), area);
}

fn cursor(app: &App) -> Span<'static> {
    Span::styled(if app.ticks % 4 < 2 { "█" } else { " " }, Style::new())
}

/// A centred box over the screen.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

fn dialog(f: &mut Frame, title: &str, text: &str, color: Color) {
    let lines = text.lines().count() as u16 + 2;
    let width = text.lines().map(|l| l.chars().count()).max().unwrap_or(0) as u16 + 4;
    let area = centered(f.area(), width.max(30), lines);
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(text.to_string())
            .wrap(Wrap { trim: false })
            .block(
                Block::bordered()
                    .border_type(BorderType::Double)
                    .border_style(Style::new().fg(color))
                    .title(format!(" {title} ")),
            ),
        area,
    );
}

fn help(f: &mut Frame, _app: &App) {
    let area = centered(f.area(), 100, HELP.len() as u16 + 2);
    let rows = HELP
        .iter()
        .map(|(k, v)| Row::new(vec![k.to_string(), v.to_string()]));
    f.render_widget(Clear, area);
    f.render_widget(
        Table::new(rows, [Constraint::Length(22), Constraint::Min(10)])
            .block(Block::bordered().title(" keys ")),
        area,
    );
}

/// The colour of a dissonance reading: harmony green, doubt yellow, discord red.
pub fn dissonance_color(d: Option<f64>) -> Color {
    match d {
        None => Color::Gray,
        Some(d) if d < 0.4 => Color::Green,
        Some(d) if d < 0.7 => Color::Yellow,
        Some(_) => Color::Red,
    }
}

/// A persona panel's state word and border colour, from its actor and its stream.
pub fn persona_state(app: &App, name: &str) -> (&'static str, Color) {
    let actor = app.state.actors.get(&format!("root/personas/{name}"));
    let status = actor.map(|a| a.status.as_str()).unwrap_or("");
    let pulse = if app.ticks.is_multiple_of(2) {
        Color::Yellow
    } else {
        Color::LightYellow
    };
    match status {
        "failed" => ("crashed", Color::Red),
        _ if app
            .flash
            .contains_key(&format!("actor:root/personas/{name}")) =>
        {
            ("restarted", Color::Magenta)
        }
        "restarting" | "starting" => ("restarting", Color::Magenta),
        _ if app.personas.get(name).is_some_and(|p| p.thinking.is_some()) => ("thinking", pulse),
        _ => ("idle", Color::Gray),
    }
}

/// The panels of the four personas.
pub fn persona_panel(f: &mut Frame, area: Rect, app: &App, name: &str) {
    let live = app.personas.get(name).cloned().unwrap_or_default();
    let view = app.state.personas.get(name);
    let (state, color) = persona_state(app, name);
    let model = view.map(|v| v.model.as_str()).unwrap_or("?");
    let generation = view
        .and_then(|v| v.state.get("generation"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let restarts = app
        .state
        .actors
        .get(&format!("root/personas/{name}"))
        .map(|a| a.restarts)
        .unwrap_or(0);
    let last = live.dissonance.back().copied();
    let flash = app
        .flash
        .contains_key(&format!("actor:root/personas/{name}"));
    let block = Block::bordered()
        .border_type(if state == "thinking" || flash {
            BorderType::Thick
        } else {
            BorderType::Rounded
        })
        .border_style(Style::new().fg(if flash { Color::Red } else { color }))
        .title(Line::from(vec![
            Span::styled(format!(" {name} "), Style::new().bold()),
            Span::raw(format!("{} · gen {generation} ", tuned(model))),
        ]));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [info, spark, text] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(2),
        Constraint::Min(0),
    ])
    .areas(inner);
    let d = last
        .map(|d| format!("{d:.2}"))
        .unwrap_or_else(|| "–".into());
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(state, Style::new().fg(color).add_modifier(Modifier::BOLD)),
            Span::raw(format!(
                " · {} steps · {restarts} restarts · d ",
                live.steps
            )),
            Span::styled(d, Style::new().fg(dissonance_color(last))),
        ])),
        info,
    );
    let points: Vec<u64> = live
        .dissonance
        .iter()
        .map(|d| (d * 100.0).round() as u64)
        .collect();
    f.render_widget(
        Sparkline::default()
            .data(&points)
            .max(100)
            .style(Style::new().fg(dissonance_color(last))),
        spark,
    );
    f.render_widget(
        Paragraph::new(tail(&live.stream, text))
            .wrap(Wrap { trim: true })
            .dim(),
        text,
    );
}

/// A model name as a panel shows it: a LoRA adapter by its digest.
pub fn tuned(model: &str) -> String {
    match model.strip_prefix("lora:") {
        Some(path) => {
            let file = path.rsplit('/').next().unwrap_or(path);
            // By characters: a model name is any printable text, multi-byte included.
            format!("adapter {}", file.chars().take(12).collect::<String>())
        }
        None => model.to_string(),
    }
}

/// The end of `text` that fits `area` (roughly: its width times its height).
pub fn tail(text: &str, area: Rect) -> String {
    let room = (area.width as usize * area.height as usize).max(1);
    let n = text.chars().count();
    text.chars().skip(n.saturating_sub(room)).collect()
}

/// A bordered block with a title.
pub fn titled(title: &str) -> Block<'static> {
    Block::default()
        .borders(Borders::ALL)
        .title(format!(" {title} "))
}

/// A progress gauge for a training run.
pub fn progress(p: &Value) -> Gauge<'static> {
    let (step, steps) = (
        p["step"].as_u64().unwrap_or(0),
        p["steps"].as_u64().unwrap_or(1).max(1),
    );
    Gauge::default()
        .ratio((step as f64 / steps as f64).clamp(0.0, 1.0))
        .label(format!(
            "{} step {step}/{steps} · loss {:.3} · {:.0} tok/s · eta {:.0} s",
            p["persona"].as_str().unwrap_or("?"),
            p["loss"].as_f64().unwrap_or(0.0),
            p["tokens_per_s"].as_f64().unwrap_or(0.0),
            p["eta_s"].as_f64().unwrap_or(0.0)
        ))
        .gauge_style(Style::new().fg(Color::Cyan))
}

/// The persona names.
pub fn personas() -> [&'static str; 4] {
    PERSONAS
}
