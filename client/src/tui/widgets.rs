//! The pieces the screens draw with: a titled block, a progress gauge, a persona's panel and its state
//! colours, a tuned model's short name, the tail of a text that fits. Pure functions, below `ui.rs` (the
//! frame) and the screens that use them.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Gauge, Paragraph, Sparkline, Wrap};
use ratatui::Frame;
use serde_json::Value;

use super::app::{App, PERSONAS};

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
