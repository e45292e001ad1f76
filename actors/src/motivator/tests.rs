//! The Motivator's logic, without an actor: every trigger from its events, the limits in their order, the
//! duplicate and priority rules, the phrasing's strict reading, and the goal file.

use batos_protocol::Event;

use super::evidence::{Counters, Evidence, Proposal};
use super::limits::{admit, duplicate_of, jaccard, next_to_run};
use super::phrase;
use super::store::{GoalStore, Saved};
use super::{Goal, GoalStatus, Trigger};
use crate::settings::{MotivatorSettings, Settings};

fn settings() -> MotivatorSettings {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = repo.join("config/settings.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    Settings::parse(&text, &path).unwrap().motivator
}

const T0: f64 = 1_800_000_000.0;

fn feed(e: &mut Evidence, s: &MotivatorSettings, events: Vec<Event>, now: f64) -> Vec<Proposal> {
    events
        .into_iter()
        .enumerate()
        .flat_map(|(i, ev)| e.observe(i as u64 + 1, &ev, s, now))
        .collect()
}

fn submitted(id: &str, goal: Option<&str>) -> Event {
    Event::TaskSubmitted {
        id: id.into(),
        text: format!("the text of {id}"),
        goal: goal.map(str::to_string),
        exam: None,
    }
}

fn step(id: &str, dissonance: Option<f64>) -> Event {
    Event::TaskStep {
        id: id.into(),
        step: 1,
        node: "critique".into(),
        persona: "ROBIN".into(),
        model: "m".into(),
        backend: "ollama".into(),
        dissonance,
        duration_ms: 1,
        summary: String::new(),
        tokens: 15,
    }
}

fn done(id: &str) -> Event {
    Event::TaskDone {
        id: id.into(),
        result: "r".into(),
    }
}

fn tool_failed(task: &str) -> Event {
    Event::ToolFailed {
        task: Some(task.into()),
        tool: "word_count".into(),
        error: "tool error: unknown field `txt`".into(),
    }
}

#[test]
fn each_trigger_fires_from_its_own_events() {
    let s = settings();
    let mut e = Evidence::new(Counters::default(), T0);
    // Dissonance: only a task that ended at or above the threshold.
    let p = feed(
        &mut e,
        &s,
        vec![submitted("a", None), step("a", Some(0.9)), done("a")],
        T0,
    );
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].trigger, Trigger::Dissonance);
    assert!(p[0].reason.contains("0.90") && p[0].reason.contains("the text of a"));
    assert!(feed(
        &mut e,
        &s,
        vec![submitted("b", None), step("b", Some(0.5)), done("b")],
        T0
    )
    .is_empty());
    // Failures: `failure_count` of one tool within the window; an old one has left it.
    let old = T0 - s.failure_window_s as f64 - 1.0;
    assert!(feed(&mut e, &s, vec![tool_failed("x")], old).is_empty());
    let mut fired = Vec::new();
    for i in 0..s.failure_count {
        fired = feed(&mut e, &s, vec![tool_failed(&format!("t{i}"))], T0);
        if i + 1 < s.failure_count {
            assert!(fired.is_empty(), "fired after {} failures", i + 1);
        }
    }
    assert_eq!(fired.len(), 1);
    let f = &fired[0];
    assert_eq!(
        (f.trigger, f.persona.as_str()),
        (Trigger::Failures, "BRICK")
    );
    assert!(
        f.reason.contains("`word_count` failed 3 times") && f.reason.contains("txt"),
        "{}",
        f.reason
    );
    assert_eq!(f.evidence.len(), s.failure_count);
    // ...and the window starts over.
    assert!(feed(&mut e, &s, vec![tool_failed("t9")], T0).is_empty());
    // A new tool, a gap, new curated data: one proposal each, for the persona it concerns.
    let p = feed(
        &mut e,
        &s,
        vec![
            Event::ToolCreated {
                name: "fib".into(),
                version: 1,
                description: "Fibonacci numbers".into(),
            },
            Event::KnowledgeGap {
                task: None,
                query: "What is  the Moon made of?".into(),
                best: Some(0.1),
            },
            Event::CuratorTrigger {
                persona: "ROBIN".into(),
                new_examples: 50,
                train: 200,
                delivered: true,
                note: String::new(),
            },
        ],
        T0,
    );
    let got: Vec<(Trigger, &str, &str)> = p
        .iter()
        .map(|p| (p.trigger, p.persona.as_str(), p.key.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Trigger::ToolCreated, "BRICK", "tool_created:fib:1"),
            (
                Trigger::KnowledgeGap,
                "BABS",
                "knowledge_gap:what is the moon made of"
            ),
            (Trigger::CuratedData, "ROBIN", "curated_data:ROBIN:3"),
        ]
    );
}

#[test]
fn importance_streaks_and_idleness_add_up_to_their_thresholds() {
    let mut s = settings();
    s.importance_threshold = 20.0;
    s.success_streak = 3;
    let mut e = Evidence::new(Counters::default(), T0);
    let mut reflections = 0;
    let mut streaks = 0;
    for i in 0..6 {
        let id = format!("t{i}");
        for p in feed(
            &mut e,
            &s,
            vec![submitted(&id, None), step(&id, Some(0.1)), done(&id)],
            T0,
        ) {
            match p.trigger {
                Trigger::Reflection => reflections += 1,
                Trigger::SuccessStreak => streaks += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    // task.done counts 3: 18 after six tasks (no reflection); a failure (8) tips it over.
    assert_eq!((reflections, streaks), (0, 2));
    let p = feed(
        &mut e,
        &s,
        vec![
            submitted("f", None),
            Event::TaskFailed {
                id: "f".into(),
                error: "boom".into(),
            },
        ],
        T0,
    );
    assert_eq!(
        p.iter()
            .filter(|p| p.trigger == Trigger::Reflection)
            .count(),
        1
    );
    assert_eq!(e.counters.importance, 0.0);
    assert_eq!(e.counters.streak, 0, "a failure breaks the streak");
    // Idle: not while a task is unfinished, then once per idle period.
    let later = T0 + s.idle_after_s as f64 + 1.0;
    assert!(e.idle(1, &s, later).is_none());
    assert!(
        e.idle(0, &s, later + 1.0).is_none(),
        "the unfinished task was activity"
    );
    let much_later = later + s.idle_after_s as f64 + 1.0;
    assert_eq!(e.idle(0, &s, much_later).unwrap().trigger, Trigger::Idle);
    assert!(e.idle(0, &s, much_later + 1.0).is_none());
}

#[test]
fn events_of_goal_tasks_feed_no_trigger() {
    let mut s = settings();
    s.failure_count = 1;
    let mut e = Evidence::new(Counters::default(), T0);
    let p = feed(
        &mut e,
        &s,
        vec![
            submitted("g", Some("goal1")),
            step("g", Some(1.0)),
            tool_failed("g"),
            Event::KnowledgeGap {
                task: Some("g".into()),
                query: "q".into(),
                best: None,
            },
            done("g"),
        ],
        T0,
    );
    assert!(p.is_empty(), "{p:?}");
    assert!(e.is_own(Some("g")));
    assert_eq!(e.counters.importance, 0.0);
    assert_eq!(
        e.last_people, 0.0,
        "a goal's task is not a person's activity"
    );
    assert_eq!(
        e.last_activity, T0,
        "but it is activity: the system is not idle"
    );
    // The same from a person's task sets goals.
    let p = feed(
        &mut e,
        &s,
        vec![submitted("u", None), tool_failed("u")],
        T0 + 1.0,
    );
    assert_eq!(p.len(), 1);
    assert_eq!(e.last_people, T0 + 1.0);
}

/// An exam's questions are measured, not lived: a discordant answer, a failed tool or a gap in one sets no
/// goal; but while an exam runs goals wait, as they do for a person (its tasks are people's activity).
#[test]
fn events_of_exam_tasks_feed_no_trigger_but_keep_goals_waiting() {
    let mut s = settings();
    s.failure_count = 1;
    let mut e = Evidence::new(Counters::default(), T0);
    let exam = Event::TaskSubmitted {
        id: "x".into(),
        text: "What is 2 + 2?".into(),
        goal: None,
        exam: Some("e1".into()),
    };
    let p = feed(
        &mut e,
        &s,
        vec![
            exam,
            step("x", Some(1.0)),
            tool_failed("x"),
            Event::KnowledgeGap {
                task: Some("x".into()),
                query: "q".into(),
                best: None,
            },
            done("x"),
        ],
        T0 + 5.0,
    );
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(e.counters.importance, 0.0);
    assert_eq!(
        e.counters.streak, 0,
        "an exam answer is no success of the household's life"
    );
    assert_eq!(e.last_people, T0 + 5.0, "goals wait while an exam runs");
    assert!(!e.is_own(Some("x")));
    // A person's task afterwards feeds the triggers as before.
    let p = feed(
        &mut e,
        &s,
        vec![submitted("u", None), tool_failed("u")],
        T0 + 6.0,
    );
    assert_eq!(p.len(), 1);
}

fn goal(id: &str, trigger: Trigger, status: GoalStatus, created_at: f64, text: &str) -> Goal {
    Goal {
        id: id.into(),
        trigger,
        key: format!("key:{id}"),
        reason: "r".into(),
        evidence: Vec::new(),
        persona: "ALFRED".into(),
        text: text.into(),
        phrased_by: "ALFRED".into(),
        priority: trigger.priority(&settings().priority),
        status,
        task: None,
        created_at,
        started_at: None,
        ended_at: None,
        outcome: None,
        tokens: 0,
    }
}

fn proposal(trigger: Trigger, key: &str) -> Proposal {
    Proposal {
        trigger,
        key: key.into(),
        reason: "r".into(),
        evidence: Vec::new(),
        persona: "ALFRED".into(),
    }
}

#[test]
fn the_limits_suppress_in_order_and_name_themselves() {
    let mut s = settings();
    s.trigger_per_hour = 2;
    s.goals_per_hour = 3;
    s.max_queued = 10;
    s.daily_tokens = 100;
    let c = Counters::default();
    let limit = |p: &Proposal,
                 goals: &[Goal],
                 c: &Counters,
                 paused: Option<&str>,
                 s: &MotivatorSettings| {
        admit(p, goals, c, paused, s, T0).err().map(|e| e.limit)
    };
    let gap = proposal(Trigger::KnowledgeGap, "knowledge_gap:q");
    assert_eq!(limit(&gap, &[], &c, None, &s), None);
    assert_eq!(limit(&gap, &[], &c, Some("command"), &s), Some("paused"));
    let mut open = goal("a", Trigger::KnowledgeGap, GoalStatus::Queued, T0, "x");
    open.key = "knowledge_gap:q".into();
    assert_eq!(
        limit(&gap, &[open.clone()], &c, None, &s),
        Some("duplicate")
    );
    open.status = GoalStatus::Done;
    let two = vec![
        open.clone(),
        goal("b", Trigger::KnowledgeGap, GoalStatus::Done, T0 - 10.0, "y"),
    ];
    assert_eq!(limit(&gap, &two, &c, None, &s), Some("trigger_rate"));
    // An hour later the same goals no longer count.
    let old: Vec<Goal> = two
        .iter()
        .cloned()
        .map(|mut g| {
            g.created_at -= 3600.0;
            g
        })
        .collect();
    assert_eq!(limit(&gap, &old, &c, None, &s), None);
    let mut three = two.clone();
    three[1].trigger = Trigger::Idle;
    three.push(goal("c", Trigger::Idle, GoalStatus::Done, T0, "z"));
    assert_eq!(limit(&gap, &three, &c, None, &s), Some("hourly_rate"));
    let mut spent = Counters::default();
    spent.charge(100, T0);
    assert_eq!(limit(&gap, &[], &spent, None, &s), Some("token_budget"));
    assert_eq!(
        spent.tokens_today(T0 + 86_400.0),
        0,
        "a new day, a new budget"
    );
    s.max_queued = 1;
    let waiting = vec![goal(
        "q",
        Trigger::Idle,
        GoalStatus::Phrasing,
        T0 - 7200.0,
        "",
    )];
    assert_eq!(limit(&gap, &waiting, &c, None, &s), Some("queue_full"));
}

#[test]
fn duplicates_are_judged_on_word_sets_and_the_queue_runs_by_priority_then_age() {
    let s = settings();
    assert!(jaccard("Research the Moon's geology", "research the moon geology s") > 0.99);
    assert!(jaccard("Research lunar geology", "Write a poem about zebras") < 0.1);
    let goals = vec![
        goal(
            "old",
            Trigger::Idle,
            GoalStatus::Queued,
            T0 - 50.0,
            "Study lunar geology in depth",
        ),
        goal(
            "gap",
            Trigger::KnowledgeGap,
            GoalStatus::Queued,
            T0,
            "Research zebra migration",
        ),
        goal(
            "gap0",
            Trigger::KnowledgeGap,
            GoalStatus::Queued,
            T0 - 5.0,
            "Research quantum tunnelling",
        ),
        goal(
            "drop",
            Trigger::Idle,
            GoalStatus::Dropped,
            T0,
            "Write a poem about zebras",
        ),
    ];
    assert_eq!(
        duplicate_of("new", "study lunar geology in depth!", &goals, &s)
            .unwrap()
            .id,
        "old"
    );
    assert!(
        duplicate_of("old", "Study lunar geology in depth", &goals, &s).is_none(),
        "not itself"
    );
    assert!(
        duplicate_of("new", "Write a poem about zebras", &goals, &s).is_none(),
        "dropped goals set no precedent"
    );
    // Knowledge gaps outrank idleness; of two, the older first.
    assert_eq!(goals[next_to_run(&goals).unwrap()].id, "gap0");
}

#[test]
fn phrasing_is_read_strictly_and_falls_back_to_a_template() {
    assert_eq!(
        phrase::parse(r#"{"goal": "  Learn X. ", "reason": "why"}"#, 600).unwrap(),
        ("Learn X.".to_string(), "why".to_string())
    );
    assert_eq!(
        phrase::parse(r#"{"goal": "abcdef", "reason": ""}"#, 3)
            .unwrap()
            .0,
        "abc"
    );
    for bad in [
        "",
        "Sure! Learn X.",
        r#"{"goal": ""}"#,
        r#"{"reason": "r"}"#,
        r#"{"goal": 3}"#,
    ] {
        assert!(phrase::parse(bad, 600).is_err(), "{bad:?}");
    }
    // A goal that echoes the prompt's placeholder or instructions is no goal: the template phrases it.
    for echo in [
        r#"{"goal": "The task, as one or two sentences addressed to the household", "reason": "x"}"#,
        r#"{"goal": "<the task>", "reason": "x"}"#,
        r#"{"goal": "Goals done recently: the household's next goal.", "reason": "x"}"#,
        r#"{"goal": "One sentence.", "reason": "x"}"#,
    ] {
        let e = phrase::parse(echo, 600).unwrap_err();
        assert!(e.contains("echoes"), "{echo}: {e}");
    }
    for real in [
        "Find out why the word_count tool failed three times and fix the call.",
        "Research what moths are attracted to.",
        "Learn X.",
    ] {
        assert!(!phrase::is_echo(real), "{real}");
    }
    let t = phrase::template(Trigger::KnowledgeGap, "BABS", "memory holds nothing", 600);
    assert!(
        t.starts_with("BABS: research") && t.contains("memory holds nothing"),
        "{t}"
    );
    let mut history = vec![
        goal("d", Trigger::Idle, GoalStatus::Done, T0, "Done goal text"),
        goal(
            "f",
            Trigger::Idle,
            GoalStatus::Failed,
            T0,
            "Failed goal text",
        ),
    ];
    history[1].outcome = Some("it broke".into());
    let g = goal("n", Trigger::Failures, GoalStatus::Phrasing, T0, "");
    let p = phrase::prompt(
        &g,
        &history,
        &phrase::Situation {
            tools: vec!["fib".into()],
            finished_tasks: 4,
        },
        3,
    );
    for want in [
        "[Why now] failures: r",
        "Done goal text",
        "Failed goal text → it broke",
        "tools: fib",
        "finished so far: 4",
    ] {
        assert!(p.contains(want), "{want:?} missing from {p}");
    }
}

#[test]
fn the_goal_file_round_trips_prunes_finished_goals_and_sets_an_unreadable_one_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (store, empty) = GoalStore::open(dir.path()).unwrap();
    assert_eq!(empty, Saved::default());
    let mut saved = Saved {
        paused: true,
        goals: (0..5)
            .map(|i| {
                goal(
                    &format!("d{i}"),
                    Trigger::Idle,
                    GoalStatus::Done,
                    T0 + i as f64,
                    "t",
                )
            })
            .chain([goal(
                "open",
                Trigger::Idle,
                GoalStatus::Queued,
                T0 - 100.0,
                "o",
            )])
            .collect(),
        counters: Counters::default(),
    };
    saved.counters.charge(42, T0);
    saved.prune(2);
    let kept: Vec<&str> = saved.goals.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(kept, vec!["d3", "d4", "open"]);
    store.save(&saved).unwrap();
    let (_, back) = GoalStore::open(dir.path()).unwrap();
    assert_eq!(back, saved);
    std::fs::write(store.path(), b"{\"paused\": tr").unwrap();
    let (_, fresh) = GoalStore::open(dir.path()).unwrap();
    assert_eq!(fresh, Saved::default());
    assert!(dir.path().join("goals.json.unreadable").exists());
}
