//! Every screen and state drawn on ratatui's `TestBackend` at 80×24 and compared with a committed insta
//! snapshot (`src/tui/snapshots/`): a layout change shows in review. Also: keys, confirmations, read-only, a
//! resync that skips events the snapshot already holds, and no panic at any size.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use batos_protocol::{Event, EventBody, StateView, TaskStatus};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use serde_json::{json, Value};

use super::app::{App, Mode, Screen, Then};
use super::keys;
use super::ui::render;

fn ev(seq: u64, e: Event) -> EventBody {
    EventBody {
        v: 1,
        seq,
        ts: 0.0,
        kind: e.kind().into(),
        data: e.data(),
    }
}

fn draw(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| render(f, app)).unwrap();
    t.backend().to_string()
}

fn press(app: &mut App, code: KeyCode) -> Vec<super::app::Req> {
    keys::key(app, KeyEvent::new(code, KeyModifiers::NONE))
}

fn typed(app: &mut App, text: &str) -> Vec<super::app::Req> {
    let mut out = Vec::new();
    for c in text.chars() {
        out.extend(press(app, KeyCode::Char(c)));
    }
    out
}

/// A daemon with four personas, two tasks (one done, one running with BRICK streaming), a tool, a pending
/// amendment; all as the event fold and the replies would have them.
fn living() -> App {
    let mut app = App::new(false);
    let mut state = StateView::default();
    let mut seq = 0;
    let mut apply = |e: Event| {
        seq += 1;
        state.apply(&e);
        seq
    };
    for p in ["ALFRED", "BABS", "BRICK", "ROBIN"] {
        apply(Event::ActorStarted {
            actor: format!("root/personas/{p}"),
            restarts: 0,
        });
        apply(Event::PersonaState {
            persona: p.into(),
            model: if p == "BRICK" {
                "lora:/data/adapters/3f9a0c2b77d1e0aa.gguf".into()
            } else {
                "smollm2:135m".into()
            },
            backend: "embedded".into(),
            state: json!({"generation": 4}),
        });
    }
    let last = apply(Event::TaskSubmitted {
        id: "a1b2c3d4e5".into(),
        text: "Why is the sky blue?".into(),
        goal: None,
        exam: None,
    });
    app.resynced(state, last, "initial");
    app.log.clear();
    app.resyncs = 0;
    for (i, e) in [
        Event::TaskStatus {
            id: "a1b2c3d4e5".into(),
            status: TaskStatus::Running,
        },
        Event::TaskStep {
            id: "a1b2c3d4e5".into(),
            step: 1,
            node: "route".into(),
            persona: "ALFRED".into(),
            model: "smollm2:135m".into(),
            backend: "embedded".into(),
            dissonance: None,
            duration_ms: 800,
            summary: "Answer directly.".into(),
            tokens: 90,
        },
        Event::TaskStep {
            id: "a1b2c3d4e5".into(),
            step: 3,
            node: "critique".into(),
            persona: "ROBIN".into(),
            model: "smollm2:135m".into(),
            backend: "embedded".into(),
            dissonance: Some(0.2),
            duration_ms: 900,
            summary: "In harmony.".into(),
            tokens: 70,
        },
        Event::TaskStep {
            id: "a1b2c3d4e5".into(),
            step: 5,
            node: "critique".into(),
            persona: "ROBIN".into(),
            model: "smollm2:135m".into(),
            backend: "embedded".into(),
            dissonance: Some(0.75),
            duration_ms: 900,
            summary: "Too cold.".into(),
            tokens: 70,
        },
        Event::TaskToken {
            id: "a1b2c3d4e5".into(),
            persona: "BRICK".into(),
            text: "Rayleigh scattering: shorter wavelengths scatter more, so".into(),
        },
        Event::ToolCreated {
            name: "fibonacci".into(),
            version: 1,
            description: "the n-th Fibonacci number".into(),
        },
        Event::AmendmentProposed {
            id: "am0001ffee".into(),
            persona: "BRICK".into(),
            rationale: "BRICK rambles.".into(),
        },
    ]
    .into_iter()
    .enumerate()
    {
        app.event(&ev(last + 1 + i as u64, e));
    }
    app.reply(&Then::Tasks, Ok(json!({"tasks": [
        {"id": "a1b2c3d4e5", "status": "running", "text": "Why is the sky blue?", "steps": 5, "dissonance": 0.75, "created_at": 100.0},
        {"id": "ff00ee11dd", "status": "done", "text": "Name a colour.", "steps": 4, "dissonance": 0.1, "created_at": 50.0, "goal": "g1"},
    ]})));
    app.reply(&Then::TaskDetail, Ok(json!({"id": "a1b2c3d4e5", "text": "Why is the sky blue?", "steps": [
        {"step": 1, "node": "route", "persona": "ALFRED", "summary": "Answer directly."},
        {"step": 2, "node": "draft", "persona": "BRICK", "summary": "Light scatters.", "tool_calls": [{"name": "calculator"}]},
    ]})));
    app.now = Some(130.0);
    app.reply(&Then::Status, Ok(json!({"tree": {"id": "root", "path": "root", "status": "running", "restarts": 0, "children": [
        {"id": "codex", "path": "root/codex", "status": "running", "restarts": 0},
        {"id": "personas", "path": "root/personas", "status": "running", "restarts": 0, "children": [
            {"id": "BRICK", "path": "root/personas/BRICK", "status": "running", "restarts": 2}]},
        {"id": "gateway", "path": "root/gateway", "status": "running", "restarts": 0}]}})));
    app.reply(&Then::Tools, Ok(json!({"tools": [
        {"name": "calculator", "version": 1, "origin": "builtin", "description": "arithmetic"},
        {"name": "fibonacci", "version": 1, "origin": "toolforge", "description": "the n-th Fibonacci number"}]})));
    app.reply(&Then::Amendments, Ok(json!({"amendments": [
        {"id": "am0001ffee", "status": "pending", "proposal": {"persona": "BRICK", "rationale": "BRICK rambles.", "changes": {"system_prompt": "You are BRICK. Be brief."}}}]})));
    app.reply(&Then::Persona, Ok(json!({"persona": "BRICK", "model": "lora:/data/adapters/3f9a0c2b77d1e0aa.gguf", "backend": "embedded", "generation": 4, "temperature": 0.3, "top_p": null, "max_tokens": null, "extra_instructions": "Cite the codex.", "calls": 12, "system_prompt": "You are BRICK, the logic engine."})));
    app.reply(
        &Then::Curator,
        Ok(json!({"personas": {"BRICK": {"seen": 40, "accepted": 31, "train": 28, "heldout": 3}}})),
    );
    app.reply(&Then::Exams, Ok(json!({"exams": [
        {"id": "e0ld0000000000000000000000000000", "name": "questions.jsonl", "status": "done", "done": 96, "total": 96,
         "society_pct": 31.0, "bare_pct": 27.0, "leaks": 9,
         "categories": [{"category": "fact", "n": 24, "society": 14, "bare": 18}, {"category": "recall", "n": 12, "society": 0, "bare": 0}]},
        {"id": "e1ive000000000000000000000000000", "name": "questions.jsonl", "status": "running", "done": 3, "total": 96,
         "society_pct": 100.0, "bare_pct": 66.7, "leaks": 0,
         "categories": [{"category": "fact", "n": 3, "society": 3, "bare": 2}, {"category": "recall", "n": 0, "society": 0, "bare": 0}]}]})));
    app
}

#[test]
fn society_while_brick_thinks() {
    let app = living();
    insta::assert_snapshot!(draw(&app, 80, 24));
}

#[test]
fn society_with_a_crashed_persona() {
    let mut app = living();
    app.event(&ev(
        100,
        Event::ActorFailed {
            actor: "root/personas/ROBIN".into(),
            reason: "debug_crash".into(),
        },
    ));
    insta::assert_snapshot!(draw(&app, 80, 24));
}

#[test]
fn every_screen_at_80_by_24() {
    let mut app = living();
    for screen in Screen::ALL {
        app.show(screen);
        insta::assert_snapshot!(
            format!("screen_{}", screen.title().to_lowercase()),
            draw(&app, 80, 24)
        );
    }
}

/// An exam's progress events fill the gauge and count both answers; its score clears it and asks for the
/// history; `c` cancels the running exam only after a confirmation.
#[test]
fn the_exam_screen_follows_a_run_and_cancels_it_after_confirmation() {
    let mut app = living();
    app.show(Screen::Exam);
    let progress = |seq, question: &str, pass, bare| {
        ev(
            seq,
            Event::ExamProgress {
                exam: "e1ive000000000000000000000000000".into(),
                phase: "question".into(),
                done: seq as u32 - 199,
                total: 96,
                question: question.into(),
                category: "fact".into(),
                pass,
                bare_pass: Some(bare),
                ms: 2100,
            },
        )
    };
    app.event(&progress(200, "fact-01", true, true));
    app.event(&progress(201, "fact-02", true, false));
    let live = app.exam.clone().unwrap();
    assert_eq!(
        (live.done, live.right, live.bare_right, live.seen),
        (2, 2, 1, 2)
    );
    insta::assert_snapshot!(draw(&app, 80, 24));
    assert!(press(&mut app, KeyCode::Char('c')).is_empty());
    assert!(matches!(&app.mode, Mode::Confirm { prompt, .. } if prompt.contains("e1ive000")));
    let sent = press(&mut app, KeyCode::Char('y'));
    assert_eq!(sent[0].cmd, "exam_cancel");
    assert_eq!(sent[0].args["id"], "e1ive000000000000000000000000000");
    let refresh = app.event(&ev(
        202,
        Event::ExamScored {
            summary: Default::default(),
        },
    ));
    assert!(app.exam.is_none());
    assert!(refresh.iter().any(|r| r.cmd == "exam_history"));
}

#[test]
fn the_supervision_screen_lists_worker_nodes_and_flashes_one_that_joined() {
    let mut app = living();
    app.show(Screen::Supervision);
    let mut status = app.replies["status"].clone();
    status["cluster"] = json!({"nodes": [
        {"node": "gpu1", "addr": "10.0.0.7:41822", "roles": ["think"], "in_flight": 2, "answered": 517, "failed": 0, "up_s": 7260.0},
        {"node": "cpu3", "addr": "10.0.0.8:40002", "roles": ["tools", "train"], "in_flight": 1, "answered": 40, "failed": 2, "up_s": 95.0},
        {"node": "box2", "addr": "10.0.0.9:50110", "roles": ["think", "tools"], "in_flight": 0, "answered": 88, "failed": 0, "up_s": 1.0}]});
    app.reply(&Then::Status, Ok(status));
    let refresh = app.event(&ev(
        100,
        Event::NodeJoined {
            node: "box2".into(),
            addr: "10.0.0.9:50110".into(),
        },
    ));
    assert!(
        refresh.iter().any(|r| r.cmd == "status"),
        "a node event asks for the nodes again"
    );
    assert!(app.flash.contains_key("node:box2"));
    insta::assert_snapshot!(draw(&app, 80, 24));
}

#[test]
fn disconnected_overlay() {
    let mut app = living();
    app.disconnected();
    insta::assert_snapshot!(draw(&app, 80, 24));
}

#[test]
fn a_pending_amendment_is_approved_only_after_confirmation() {
    let mut app = living();
    app.show(Screen::Codex);
    assert!(press(&mut app, KeyCode::Char('a')).is_empty());
    assert!(matches!(app.mode, Mode::Confirm { .. }));
    insta::assert_snapshot!(draw(&app, 80, 24));
    let sent = press(&mut app, KeyCode::Char('y'));
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].cmd.as_str(), &sent[0].args),
        ("approve_amendment", &json!({"id": "am0001ffee"}))
    );
    // Any other key cancels.
    press(&mut app, KeyCode::Char('a'));
    assert!(press(&mut app, KeyCode::Char('n')).is_empty());
    assert_eq!(app.message.as_deref(), Some("cancelled"));
}

#[test]
fn training_progress_and_a_verdict() {
    let mut app = living();
    app.show(Screen::Trainer);
    app.event(&ev(
        101,
        Event::TrainerProgress {
            persona: "BRICK".into(),
            step: 12,
            steps: 40,
            epoch: 1,
            loss: 1.234,
            tokens_per_s: 38.5,
            eta_s: 600.0,
        },
    ));
    insta::assert_snapshot!("training", draw(&app, 80, 24));
    app.event(&ev(
        102,
        Event::ModelTuned {
            persona: "BRICK".into(),
            model: "lora:/data/adapters/3f9a.gguf".into(),
            heldout_before: 2.85,
            heldout_after: 0.06,
            general_before: 1.67,
            general_after: 1.82,
            exam_before: None,
            exam_after: None,
        },
    ));
    insta::assert_snapshot!("tuned", draw(&app, 80, 24));
}

#[test]
fn submitting_from_the_input_line_sends_the_text_and_readonly_sends_nothing() {
    let mut app = living();
    press(&mut app, KeyCode::Char('s'));
    typed(&mut app, "What is a river?");
    insta::assert_snapshot!("input_line", draw(&app, 80, 24));
    let sent = press(&mut app, KeyCode::Enter);
    assert_eq!(sent[0].cmd, "submit_task");
    assert_eq!(sent[0].args, json!({"text": "What is a river?"}));
    let mut ro = living();
    ro.readonly = true;
    assert!(press(&mut ro, KeyCode::Char('s')).is_empty());
    assert_eq!(ro.mode, Mode::Normal);
    assert!(
        ro.message.as_deref().unwrap().contains("read-only"),
        "{:?}",
        ro.message
    );
    ro.show(Screen::Codex);
    press(&mut ro, KeyCode::Char('a'));
    assert_eq!(
        ro.mode,
        Mode::Normal,
        "read-only asks nothing and sends nothing"
    );
    assert!(keys::command(&mut ro, "cancel a1b2c3d4e5").is_empty());
}

#[test]
fn commands_are_parsed_and_bad_ones_are_explained() {
    let mut app = living();
    let sent = keys::command(&mut app, "call fibonacci {\"n\": 10}");
    assert_eq!(
        sent[0].args,
        json!({"name": "fibonacci", "args": {"n": 10}})
    );
    assert!(keys::command(&mut app, "call fibonacci {n: 10}").is_empty());
    assert!(app.message.as_deref().unwrap().contains("not JSON"));
    assert!(
        keys::command(&mut app, "set BRICK temperature 0.4").is_empty(),
        "asks first"
    );
    match &app.mode {
        Mode::Confirm { req, .. } => assert_eq!(
            req.args,
            json!({"persona": "BRICK", "field": "temperature", "value": 0.4})
        ),
        other => panic!("{other:?}"),
    }
    app.mode = Mode::Normal;
    assert!(keys::command(&mut app, "frobnicate").is_empty());
    assert!(app.message.as_deref().unwrap().contains("unknown command"));
    assert!(keys::command(&mut app, "set BRICK").is_empty());
    assert!(app.message.as_deref().unwrap().contains("usage"));
}

#[test]
fn a_resync_keeps_events_the_snapshot_already_holds_from_counting_twice() {
    let mut app = living();
    let steps = app.personas["ROBIN"].steps;
    let seq = app.seq;
    // The snapshot came at `seq`; the same event delivered again (it was buffered during the snapshot) is skipped.
    let again = ev(
        seq,
        Event::TaskStep {
            id: "a1b2c3d4e5".into(),
            step: 5,
            node: "critique".into(),
            persona: "ROBIN".into(),
            model: "m".into(),
            backend: "embedded".into(),
            dissonance: Some(0.75),
            duration_ms: 1,
            summary: "x".into(),
            tokens: 1,
        },
    );
    assert!(app.event(&again).is_empty());
    assert_eq!(app.personas["ROBIN"].steps, steps);
    app.resynced(StateView::default(), seq + 1_000_000, "daemon restarted");
    assert_eq!(app.resyncs, 1);
    app.show(Screen::Events);
    insta::assert_snapshot!("events_after_resync", draw(&app, 80, 24));
}

#[test]
fn no_size_and_no_event_makes_it_panic() {
    let mut app = living();
    for screen in Screen::ALL {
        app.show(screen);
        app.mode = Mode::Help;
        for (w, h) in [(1, 1), (10, 3), (20, 5), (80, 24), (200, 60)] {
            draw(&app, w, h);
        }
        app.mode = Mode::Normal;
    }
    // Kinds this build does not know, and data of the wrong shape, are logged and change nothing else.
    let odd = EventBody {
        v: 1,
        seq: 500,
        ts: 0.0,
        kind: "from.the.future".into(),
        data: json!({"x": [1, 2]}),
    };
    app.event(&odd);
    let bad = EventBody {
        v: 1,
        seq: 501,
        ts: 0.0,
        kind: "task.step".into(),
        data: Value::Null,
    };
    app.event(&bad);
    assert_eq!(app.seq, 501);
    // A model name of multi-byte characters (any printable text is a valid name).
    let swap = Event::PersonaState {
        persona: "BRICK".into(),
        model: "lora:/a/ééééééééééééé.gguf".into(),
        backend: "embedded".into(),
        state: json!({}),
    };
    app.event(&ev(502, swap));
    app.show(Screen::Society);
    draw(&app, 80, 24);
}
