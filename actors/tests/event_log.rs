//! The event log line, seen from outside as an operator reads it: each published event is one JSON line
//! whose fields come from the event's own wire data, with no line written for any kind (a test of its own:
//! tracing caches whether a call site is enabled per process, and the library's other tests publish with no
//! subscriber at all).

#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::sync::{Arc, Mutex};

use batos_actors::events::{Event, EventHub};
use serde_json::json;
/// What a `MakeWriter` hands out in the log test: every line into one shared buffer.
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn each_event_is_one_log_line_read_from_its_data() {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || Lines(sink.clone()))
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let hub = EventHub::new(16);
        hub.set_log_field_chars(40);
        hub.publish(Event::ActorFailed {
            actor: "root/personas/BRICK".into(),
            reason: "boom".into(),
        });
        hub.publish(Event::TaskDone {
            id: "t1".into(),
            result: "word ".repeat(40),
        });
        hub.publish(Event::TaskToken {
            id: "t1".into(),
            persona: "BRICK".into(),
            text: "tok".into(),
        });
        hub.publish(Event::KnowledgeGap {
            task: None,
            query: "why".into(),
            best: None,
        });
        // A kind the log code names nowhere: logged all the same, from its data.
        hub.publish(Event::LifeExam {
            life: "l1".into(),
            exam: "e1".into(),
            phase: "check".into(),
            at_task: 15,
            check_pct: 75.0,
            pct: 80.0,
        });
        hub.set_log_field_chars(0);
        hub.publish(Event::TaskCancelled { id: "t2".into() });
    });
    let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    // One line per event; the token is debug-only and the filter is `info`.
    assert_eq!(
        kinds,
        [
            "actor.failed",
            "task.done",
            "knowledge.gap",
            "life.exam",
            "task.cancelled"
        ]
    );
    let fields = |i: usize| -> serde_json::Value {
        serde_json::from_str(lines[i]["fields"].as_str().unwrap()).unwrap()
    };
    let failed = &lines[0];
    assert_eq!(failed["level"], "ERROR");
    assert_eq!(failed["seq"], 1);
    assert_eq!(failed["message"], "actor failed");
    assert_eq!(
        fields(0),
        json!({"actor": "root/personas/BRICK", "reason": "boom"})
    );
    assert_eq!(lines[1]["level"], "INFO");
    let done = fields(1);
    assert_eq!(done["task"], "t1", "a task event's id is its `task`");
    let result = done["result"].as_str().unwrap();
    assert_eq!(result.chars().count(), 41, "cut at 40 characters: {result}");
    assert!(result.starts_with("word word") && result.ends_with('…'));
    assert_eq!(fields(2)["task"], "-", "an absent task is written `-`");
    assert_eq!(fields(2)["best"], "-");
    // Every member of a kind the log code never names.
    assert_eq!(
        fields(3),
        json!({"life": "l1", "exam": "e1", "phase": "check", "at_task": 15, "check_pct": 75.0, "pct": 80.0})
    );
    assert_eq!(fields(4), json!({"task": "t2"}));
}
