//! Event kinds and timestamps as they travel.

use super::*;

#[test]
fn timestamps_survive_a_json_round_trip() {
    let start = unix_now();
    for i in 0..10_000u32 {
        let t = start + f64::from(i) * 0.000_137;
        let t = (t * 1e6).round() / 1e6;
        let back: f64 = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t, "{t}");
    }
    let now = unix_now();
    let back: f64 = serde_json::from_str(&serde_json::to_string(&now).unwrap()).unwrap();
    assert_eq!(back, now);
}

#[test]
fn kind_matches_serde_tag() {
    let ev = Event::ModelSwapped {
        persona: "BRICK".into(),
        from: "a".into(),
        to: "b".into(),
        generation: 2,
    };
    let v = serde_json::to_value(&ev).unwrap();
    assert_eq!(v["kind"], ev.kind());
}

#[test]
fn every_kind_is_the_serde_tag_read_without_serializing_the_payload() {
    let events = [
        Event::ActorStarted {
            actor: "root/codex".into(),
            restarts: 0,
        },
        Event::TaskCancelled { id: "a1".into() },
        Event::ModelSwapped {
            persona: "BRICK".into(),
            from: "a".into(),
            to: "b".into(),
            generation: 2,
        },
        Event::MotivatorPaused {
            paused: true,
            reason: "x".into(),
        },
    ];
    for ev in &events {
        let v = serde_json::to_value(ev).unwrap();
        assert_eq!(v["kind"], ev.kind());
        assert_eq!(
            Event::from_body(&EventBody {
                v: 1,
                seq: 1,
                ts: 0.0,
                kind: ev.kind().into(),
                data: ev.data(),
            })
            .as_ref(),
            Some(ev)
        );
    }
    // Only an adjacently tagged enum has a tag to read.
    #[derive(Serialize)]
    #[serde(tag = "t", content = "c")]
    enum Local {
        #[serde(rename = "local.one")]
        One { x: u32 },
    }
    assert_eq!(kind::tag_of(&Local::One { x: 1 }), Some("local.one"));
    assert_eq!(kind::tag_of(&3u32), None);
    assert_eq!(kind::tag_of(&"text"), None);
    assert_eq!(kind::tag_of(&serde_json::json!({"kind": "x"})), None);
}
