//! Keys: what each does on each screen, the `:` command line, confirmations before anything that changes the
//! daemon, and the reason a key does nothing (read-only, nothing selected).

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::{json, Value};

use super::app::{req, App, Mode, Req, Screen, Then, PERSONAS};

/// The key map, as `?` shows it and the README prints it.
pub const HELP: &[(&str, &str)] = &[
    ("tab / shift-tab, 1-9", "next / previous screen, or screen n"),
    ("j k / ↓ ↑", "move the selection"),
    ("/", "filter the list (enter keeps it, esc clears it)"),
    (":", "command line: submit TEXT · cancel ID · resume ID [GUIDANCE] · approve ID · reject ID REASON"),
    ("", "  call TOOL {JSON} · set PERSONA FIELD VALUE · swap PERSONA MODEL · rollback PERSONA · train PERSONA · q"),
    ("s", "Tasks/Society: submit a task"),
    ("c / u", "Tasks: cancel / resume the selected task"),
    ("a / r", "Codex: approve / reject the selected amendment"),
    ("enter", "Tools: call the selected tool with JSON arguments"),
    ("← →, e, m", "Inspector: other persona, edit a field, swap the model"),
    ("R", "Trainer: roll the inspected persona back to its model before tuning"),
    ("c", "Exam: cancel the running exam"),
    ("?", "this help (any key closes it)"),
    ("q, ctrl-c", "quit"),
];

/// The footer's hints for the shown screen.
pub fn hints(app: &App) -> &'static str {
    match (&app.mode, app.screen) {
        (Mode::Command(_), _) => "enter run · esc cancel",
        (Mode::Filter(_), _) => "enter keep · esc clear",
        (Mode::Input { .. }, _) => "enter send · esc cancel",
        (Mode::Confirm { .. }, _) => "y confirm · any other key cancels",
        (Mode::Help, _) => "any key closes",
        (_, Screen::Society) => "s submit · tab screens · : command · ? help · q quit",
        (_, Screen::Tasks) => "j/k select · s submit · c cancel · u resume · / filter · ? help",
        (_, Screen::Tools) => "j/k select · enter call · / filter · ? help",
        (_, Screen::Codex) => "j/k select · a approve · r reject · ? help",
        (_, Screen::Inspector) => "←/→ persona · e edit field · m swap model · ? help",
        (_, Screen::Supervision) => "restarts flash · ? help",
        (_, Screen::Trainer) => "R rollback inspected persona · : train PERSONA · ? help",
        (_, Screen::Events) => "j/k scroll · resync markers show recovered gaps · ? help",
        (_, Screen::Exam) => {
            "j/k select · c cancel the running exam · batos exam run FILE starts one · ? help"
        }
    }
}

fn changes(app: &mut App, what: &str) -> bool {
    if app.readonly {
        app.message = Some(format!("{what}: read-only (started with --readonly)"));
        return false;
    }
    true
}

fn confirm(app: &mut App, prompt: String, r: Req) {
    if changes(app, &prompt) {
        app.mode = Mode::Confirm { prompt, req: r };
    }
}

/// Handles one key; answers the requests it sends.
pub fn key(app: &mut App, k: KeyEvent) -> Vec<Req> {
    if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
        app.quit = true;
        return Vec::new();
    }
    match std::mem::replace(&mut app.mode, Mode::Normal) {
        Mode::Normal => normal(app, k),
        Mode::Help => Vec::new(),
        Mode::Confirm { req, .. } => {
            if k.code == KeyCode::Char('y') {
                vec![req]
            } else {
                app.message = Some("cancelled".into());
                Vec::new()
            }
        }
        Mode::Command(text) => line(app, k, text, Mode::Command, command),
        Mode::Filter(text) => {
            let live = match k.code {
                KeyCode::Esc => {
                    app.filter.clear();
                    return Vec::new();
                }
                KeyCode::Enter => return Vec::new(),
                KeyCode::Backspace => {
                    let mut t = text;
                    t.pop();
                    t
                }
                KeyCode::Char(c) => format!("{text}{c}"),
                _ => text,
            };
            app.filter = live.clone();
            app.mode = Mode::Filter(live);
            Vec::new()
        }
        Mode::Input { purpose, text } => {
            let p = purpose.clone();
            line(
                app,
                k,
                text,
                move |t| Mode::Input {
                    purpose: p.clone(),
                    text: t,
                },
                move |app, t| input(app, &purpose, t),
            )
        }
    }
}

/// Editing a line: enter runs `done`, esc drops it.
fn line(
    app: &mut App,
    k: KeyEvent,
    mut text: String,
    again: impl Fn(String) -> Mode,
    done: impl FnOnce(&mut App, &str) -> Vec<Req>,
) -> Vec<Req> {
    match k.code {
        KeyCode::Esc => Vec::new(),
        KeyCode::Enter => done(app, text.trim()),
        KeyCode::Backspace => {
            text.pop();
            app.mode = again(text);
            Vec::new()
        }
        KeyCode::Char(c) => {
            text.push(c);
            app.mode = again(text);
            Vec::new()
        }
        _ => {
            app.mode = again(text);
            Vec::new()
        }
    }
}

fn normal(app: &mut App, k: KeyEvent) -> Vec<Req> {
    let shift_tab = k.code == KeyCode::BackTab;
    match k.code {
        KeyCode::Char('q') => app.quit = true,
        KeyCode::Char('?') => app.mode = Mode::Help,
        KeyCode::Char(':') => app.mode = Mode::Command(String::new()),
        KeyCode::Char('/') => app.mode = Mode::Filter(app.filter.clone()),
        KeyCode::Tab => return app.cycle(1),
        _ if shift_tab => return app.cycle(-1),
        KeyCode::Char(c @ '1'..='9') => {
            return app.show(Screen::ALL[(c as u8 - b'1') as usize]);
        }
        KeyCode::Char('j') | KeyCode::Down | KeyCode::Char('k') | KeyCode::Up => {
            let down = matches!(k.code, KeyCode::Char('j') | KeyCode::Down);
            app.select(if down { 1 } else { -1 });
            // The newly selected task's steps, now rather than at the next refresh.
            if app.screen == Screen::Tasks {
                if let Some(id) = app.selected_task() {
                    return vec![req("get_task", json!({"id": id}), Then::TaskDetail)];
                }
            }
        }
        _ => return screen_key(app, k),
    }
    Vec::new()
}

fn screen_key(app: &mut App, k: KeyEvent) -> Vec<Req> {
    let task = app.selected_task();
    match (app.screen, k.code) {
        (Screen::Society | Screen::Tasks, KeyCode::Char('s')) if changes(app, "submit") => {
            app.mode = Mode::Input {
                purpose: "submit".into(),
                text: String::new(),
            };
        }
        (Screen::Tasks, KeyCode::Char('c')) => match task {
            Some(id) => confirm(
                app,
                format!("cancel task {}?", short(&id)),
                req(
                    "cancel_task",
                    json!({"id": id}),
                    Then::Done("cancel".into()),
                ),
            ),
            None => app.message = Some("cancel: no task selected".into()),
        },
        (Screen::Exam, KeyCode::Char('c')) => {
            let running = app.exam.as_ref().map(|e| e.id.clone()).or_else(|| {
                app.exam_rows()
                    .iter()
                    .find(|r| r["status"] == "running")
                    .and_then(|r| r["id"].as_str().map(str::to_string))
            });
            match running {
                Some(id) => confirm(
                    app,
                    format!(
                        "cancel exam {}? (its answers so far are kept and scored)",
                        short(&id)
                    ),
                    req(
                        "exam_cancel",
                        json!({"id": id}),
                        Then::Done("cancel exam".into()),
                    ),
                ),
                None => app.message = Some("cancel: no exam is running".into()),
            }
        }
        (Screen::Tasks, KeyCode::Char('u')) => match task {
            Some(id) => confirm(
                app,
                format!("resume task {}?", short(&id)),
                req(
                    "resume_task",
                    json!({"id": id}),
                    Then::Done("resume".into()),
                ),
            ),
            None => app.message = Some("resume: no task selected".into()),
        },
        (Screen::Codex, KeyCode::Char(c @ ('a' | 'r'))) => {
            let rows = app.amendment_rows();
            let Some(a) = rows.get(app.sel()) else {
                app.message = Some("no amendment selected".into());
                return Vec::new();
            };
            let id = a["id"].as_str().unwrap_or_default().to_string();
            if a["status"] != "pending" {
                app.message = Some(format!(
                    "amendment {} is {}, not pending",
                    short(&id),
                    a["status"]
                ));
            } else if c == 'a' {
                confirm(
                    app,
                    format!(
                        "approve amendment {} and commit it to codex.toml?",
                        short(&id)
                    ),
                    req(
                        "approve_amendment",
                        json!({"id": id}),
                        Then::Done("approve".into()),
                    ),
                );
            } else if changes(app, "reject") {
                app.mode = Mode::Input {
                    purpose: format!("reject {id} because"),
                    text: String::new(),
                };
            }
        }
        (Screen::Tools, KeyCode::Enter) => {
            let rows = app.tool_rows();
            match rows.get(app.sel()).and_then(|t| t["name"].as_str()) {
                Some(name) if changes(app, "call") => {
                    app.mode = Mode::Input {
                        purpose: format!("call {name} with"),
                        text: "{}".into(),
                    };
                }
                Some(_) => {}
                None => app.message = Some("call: no tool selected".into()),
            }
        }
        (Screen::Inspector, KeyCode::Left | KeyCode::Right) => {
            let step = if k.code == KeyCode::Left {
                PERSONAS.len() - 1
            } else {
                1
            };
            app.inspected = (app.inspected + step) % PERSONAS.len();
            return app.refresh();
        }
        (Screen::Inspector, KeyCode::Char('e')) if changes(app, "edit") => {
            app.mode = Mode::Input {
                purpose: format!(
                    "set {} (temperature|top_p|max_tokens|extra_instructions VALUE)",
                    app.inspected_name()
                ),
                text: String::new(),
            };
        }
        (Screen::Inspector, KeyCode::Char('m')) if changes(app, "swap") => {
            app.mode = Mode::Input {
                purpose: format!("swap {} to model", app.inspected_name()),
                text: String::new(),
            };
        }
        (Screen::Trainer | Screen::Inspector, KeyCode::Char('R')) => {
            let p = app.inspected_name();
            confirm(
                app,
                format!("roll {p} back to its model before tuning?"),
                req(
                    "rollback_model",
                    json!({"persona": p}),
                    Then::Done("rollback".into()),
                ),
            );
        }
        _ => {}
    }
    Vec::new()
}

fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

/// An input line finished.
fn input(app: &mut App, purpose: &str, text: &str) -> Vec<Req> {
    let words: Vec<&str> = purpose.split_whitespace().collect();
    match words.as_slice() {
        ["submit"] => command(app, &format!("submit {text}")),
        ["reject", id, ..] => command(app, &format!("reject {id} {text}")),
        ["call", name, ..] => command(app, &format!("call {name} {text}")),
        ["set", persona, ..] => command(app, &format!("set {persona} {text}")),
        ["swap", persona, ..] => command(app, &format!("swap {persona} {text}")),
        _ => Vec::new(),
    }
}

/// A `:` command line.
pub fn command(app: &mut App, line: &str) -> Vec<Req> {
    let (verb, rest) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
    let rest = rest.trim();
    let arg2 = || {
        rest.split_once(' ')
            .map(|(a, b)| (a, b.trim()))
            .unwrap_or((rest, ""))
    };
    let done = |what: &str| Then::Done(what.into());
    let need = |app: &mut App, ok: bool, usage: &str| {
        if !ok {
            app.message = Some(format!("usage: {usage}"));
        }
        ok
    };
    let r = match verb {
        "" => return Vec::new(),
        "q" | "quit" => {
            app.quit = true;
            return Vec::new();
        }
        "submit" => {
            if !need(app, !rest.is_empty(), "submit TEXT") {
                return Vec::new();
            }
            req("submit_task", json!({"text": rest}), done("submit"))
        }
        "cancel" => req("cancel_task", json!({"id": rest}), done("cancel")),
        "resume" => {
            let (id, g) = arg2();
            let mut args = json!({"id": id});
            if !g.is_empty() {
                args["guidance"] = json!(g);
            }
            req("resume_task", args, done("resume"))
        }
        "approve" => req("approve_amendment", json!({"id": rest}), done("approve")),
        "reject" => {
            let (id, why) = arg2();
            req(
                "reject_amendment",
                json!({"id": id, "reason": why}),
                done("reject"),
            )
        }
        "call" => {
            let (name, args) = arg2();
            let args: Value = match serde_json::from_str(if args.is_empty() { "{}" } else { args })
            {
                Ok(v) => v,
                Err(e) => {
                    app.message = Some(format!("call {name}: the arguments are not JSON: {e}"));
                    return Vec::new();
                }
            };
            req(
                "call_tool",
                json!({"name": name, "args": args}),
                done(&format!("call {name}")),
            )
        }
        "set" => {
            let parts: Vec<&str> = rest.splitn(3, ' ').collect();
            if !need(app, parts.len() == 3, "set PERSONA FIELD VALUE") {
                return Vec::new();
            }
            let value = serde_json::from_str(parts[2]).unwrap_or_else(|_| json!(parts[2]));
            req(
                "update_persona",
                json!({"persona": parts[0], "field": parts[1], "value": value}),
                done("set"),
            )
        }
        "swap" => {
            let (p, m) = arg2();
            req(
                "swap_model",
                json!({"persona": p, "model": m}),
                done("swap"),
            )
        }
        "rollback" => req("rollback_model", json!({"persona": rest}), done("rollback")),
        "train" => req("trainer_run", json!({"persona": rest}), done("train")),
        other => {
            app.message = Some(format!("unknown command `{other}` (? shows them)"));
            return Vec::new();
        }
    };
    if !changes(app, verb) {
        return Vec::new();
    }
    // Submitting asks nothing: it adds, it does not destroy. Everything else changes what exists.
    if verb == "submit" || verb == "call" {
        return vec![r];
    }
    confirm(app, format!("{line}?"), r);
    Vec::new()
}
