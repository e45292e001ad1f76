//! The life's pure parts: the held-out subset, the tools a check blames, the switches and their reload.

use std::collections::BTreeSet;

use batos_protocol::exam::{parse_set, ExamAnswer, ExamQuestion, ExamResult, QuestionResult};

use super::run::{blamed_tools, check_ids};
use super::switches;
use crate::settings::{LifeSettings, Settings};

fn set() -> String {
    let mut lines = Vec::new();
    for (cat, n) in [("fact", 6), ("arithmetic", 3), ("recall", 1)] {
        for i in 0..n {
            lines.push(format!(
                r#"{{"id": "{cat}-{i}", "category": "{cat}", "question": "q {cat} {i}?", "check": {{"any": ["x"]}}}}"#
            ));
        }
    }
    lines.join("\n")
}

#[test]
fn the_held_out_subset_spreads_over_every_category_and_keeps_the_set_order() {
    let qs = parse_set(&set()).unwrap();
    let ids = check_ids(&qs, 5);
    assert_eq!(ids.len(), 5, "{ids:?}");
    for cat in ["fact", "arithmetic", "recall"] {
        assert!(ids.iter().any(|i| i.starts_with(cat)), "{cat} in {ids:?}");
    }
    let order: Vec<usize> = ids
        .iter()
        .map(|i| qs.iter().position(|q| &q.id == i).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert!(
        !ids.contains(&"fact-1".to_string()) || ids.contains(&"fact-0".to_string()),
        "{ids:?}"
    );
    assert_eq!(check_ids(&qs, 0).len(), 10, "0: the whole set");
    assert_eq!(check_ids(&qs, 50).len(), 10);
    assert_eq!(check_ids(&qs, 5), ids, "the same set gives the same subset");
    // In proportion: 6 of 10 are fact, so 3 of the 5 picks; the others one each.
    assert_eq!(
        ids.iter().filter(|i| i.starts_with("fact")).count(),
        3,
        "{ids:?}"
    );
    assert_eq!(check_ids(&qs, 2).len(), 2, "fewer picks than categories");
}

#[test]
fn the_shipped_life_exam_checks_recall_in_its_share_of_the_set() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config");
    let text = std::fs::read_to_string(root.join("life/exam.jsonl")).unwrap();
    let qs = parse_set(&text).unwrap();
    let shipped = crate::settings::LoadedSettings::load(&root.join("settings.toml")).unwrap();
    let n = shipped.settings.life.check_questions;
    let ids = check_ids(&qs, n);
    assert_eq!(ids.len(), n);
    let count =
        |cat: &str, among: &[&ExamQuestion]| among.iter().filter(|q| q.category == cat).count();
    let all: Vec<&ExamQuestion> = qs.iter().collect();
    let picked: Vec<&ExamQuestion> = qs.iter().filter(|q| ids.contains(&q.id)).collect();
    let cats: std::collections::BTreeSet<&str> = qs.iter().map(|q| q.category.as_str()).collect();
    for cat in cats {
        let want = n as f64 * count(cat, &all) as f64 / qs.len() as f64;
        let got = count(cat, &picked) as f64;
        assert!(
            got >= 1.0 && (got - want).abs() < 1.0,
            "{cat}: {got} picks, share {want:.2}"
        );
    }
}

fn answered(id: &str, pass: bool, tools: &[&str]) -> QuestionResult {
    QuestionResult {
        id: id.into(),
        category: "c".into(),
        question: "q".into(),
        society: ExamAnswer {
            pass,
            tools: tools.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        },
        bare: None,
        judge: None,
    }
}

#[test]
fn a_forged_tool_is_blamed_when_its_calls_went_with_more_wrong_answers_than_right() {
    let mut r = ExamResult {
        summary: Default::default(),
        error: None,
        fingerprint: Default::default(),
        questions: Vec::new(),
        taught: Vec::new(),
        results: Vec::new(),
        judge: false,
    };
    r.results = vec![
        answered("a", false, &["miles_to_km"]),
        answered("b", false, &["miles_to_km!"]),
        answered("c", true, &["miles_to_km", "calculate"]),
        answered("d", true, &["word_freq"]),
        answered("e", false, &["calculate"]),
    ];
    let forged: BTreeSet<String> = ["miles_to_km", "word_freq", "unused"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(blamed_tools(&r, &forged), vec!["miles_to_km".to_string()]);
}

#[test]
fn an_ablation_switches_exactly_its_loop_and_the_switches_are_in_force_once_reloaded() {
    let life = LifeSettings::default();
    let full = switches::plan(&life, None);
    assert_eq!(full.len(), 3, "{full:?}");
    for (ablate, key) in [
        ("memory", "memory.active"),
        ("tools", "tools.forge_active"),
        ("trainer", "trainer.auto_train"),
        ("motivator", "motivator.paused"),
    ] {
        let p = switches::plan(&life, Some(ablate));
        assert_eq!(p.len(), 4);
        assert_eq!(p[3].0, key);
        // A switch the daemon would not reload live would never come into force (a life would fail waiting).
        for (k, _) in &p {
            assert!(
                !crate::codex::reload::is_restart_only(k),
                "{k} is restart-only"
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.toml");
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/settings.toml"
    ))
    .unwrap();
    std::fs::write(&path, &shipped).unwrap();
    let switched = switches::prepare(&path, &switches::plan(&life, Some("memory"))).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        shipped,
        "preparing writes nothing"
    );
    assert!(switched.iter().all(|s| s.before.is_some()), "{switched:?}");
    switches::apply(&path, &switched).unwrap();
    switches::apply(&path, &switched).unwrap();
    let before = Settings::parse(&shipped, &path).unwrap();
    assert!(
        !switches::in_force(&before, &switched),
        "not before the reload"
    );
    let after = Settings::parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
    assert!(switches::in_force(&after, &switched));
    assert!(!after.memory.active);
    assert_eq!(after.trainer.steps, life.trainer_steps);
    switches::restore(&path, &switched).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), shipped);
}

#[test]
fn a_life_beyond_its_bounds_is_refused_before_it_starts_naming_the_bound() {
    use batos_protocol::life::LifeRunArgs;
    let curriculum: String = (0..5)
        .map(|i| format!("{{\"text\": \"task {i}\"}}\n"))
        .collect();
    let args = |limit: Option<u32>, for_s: Option<u64>| LifeRunArgs {
        curriculum: curriculum.clone(),
        exam: set(),
        every: 2,
        for_s,
        limit,
        ablate: None,
        approve_amendments: false,
        name: None,
    };
    let life = LifeSettings {
        max_tasks: 3,
        max_run_s: 60,
        ..LifeSettings::default()
    };
    let e = super::actor::new_record(args(None, None), &life)
        .unwrap_err()
        .to_string();
    assert!(e.contains("5 tasks") && e.contains("life.max_tasks"), "{e}");
    assert!(
        super::actor::new_record(args(Some(3), None), &life).is_ok(),
        "`limit` brings it within"
    );
    let e = super::actor::new_record(args(Some(3), Some(61)), &life)
        .unwrap_err()
        .to_string();
    assert!(e.contains("life.max_run_s"), "{e}");
    assert!(super::actor::new_record(args(Some(3), Some(60)), &life).is_ok());
}
