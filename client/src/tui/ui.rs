//! Drawing: a header (screens, seq, counts, link), the screen, a footer (hints, the input line or the last
//! outcome), and the overlays (help, confirmation, disconnected). Pure functions of [`App`]; every width is
//! clamped, so any terminal size down to a few cells draws without a panic (80×24 is the design size).

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use super::app::{status_word, App, Mode, Screen};
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
