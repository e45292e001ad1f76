//! The exam organ's logic without a daemon: a run's arguments are validated before anything runs, and its
//! result file is kept, listed, pruned and — when unreadable — set aside. The run itself (teach, ask, bare,
//! judge, resume) is tested on the real daemon in `tests/e2e/exam.rs`.

use batos_protocol::exam::{ExamRunArgs, ExamStatus};

use super::actor::new_result;
use super::store::{valid_id, ResultStore};
use super::ExamError;

const SET: &str = r#"{"id":"f1","category":"fact","question":"Capital of France?","check":{"any":["Paris"]}}
{"id":"r1","category":"recall","question":"My cat?","teach":"My cat is called Pixel.","check":{"any":["Pixel"]}}
"#;

fn args(set: &str) -> ExamRunArgs {
    ExamRunArgs {
        set: set.into(),
        name: None,
        baseline: Some("bare".into()),
        judge: None,
        categories: None,
    }
}

#[test]
fn a_run_is_refused_before_it_starts_when_its_set_or_arguments_are_wrong() {
    let (r, graders) = new_result(&args(SET), true, 1000).unwrap();
    assert_eq!(graders.len(), 2);
    assert!(valid_id(&r.summary.id));
    assert_eq!(r.summary.status, "running");
    assert_eq!((r.summary.total, r.summary.done), (2, 0));
    assert!(r.summary.baseline && r.judge);
    assert_eq!(
        r.summary.categories.len(),
        2,
        "every category listed from the start"
    );
    let same = new_result(&args(&format!("# a comment\n{SET}")), true, 1000)
        .unwrap()
        .0;
    assert_eq!(
        same.summary.set_digest, r.summary.set_digest,
        "comments do not change the set"
    );

    let bad_regex = r#"{"id":"x","category":"c","question":"q","check":{"regex":"("}}"#;
    match new_result(&args(bad_regex), true, 1000) {
        Err(ExamError::Invalid(e)) => {
            assert!(e.contains("question x") && e.contains("regex"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    let mut a = args(SET);
    a.baseline = Some("llama".into());
    assert!(matches!(new_result(&a, true, 1000), Err(ExamError::Invalid(e)) if e.contains("baseline")));
    let mut a = args(SET);
    a.categories = Some(vec!["recall".into()]);
    let (only, _) = new_result(&a, false, 1000).unwrap();
    assert_eq!(only.questions.len(), 1);
    assert!(!only.judge);
    a.categories = Some(vec!["nothing".into()]);
    assert!(matches!(new_result(&a, true, 1000), Err(ExamError::Invalid(_))));
    let mut a = args(SET);
    a.name = Some("bad\u{7}name".into());
    assert!(matches!(new_result(&a, true, 1000), Err(ExamError::Invalid(e)) if e.contains("name")));
    assert!(
        matches!(new_result(&args("{}"), true, 1000), Err(ExamError::Invalid(e)) if e.contains("line 1"))
    );
    // A set beyond exam.max_questions is refused, naming the bound.
    match new_result(&args(SET), true, 1) {
        Err(ExamError::Invalid(e)) => {
            assert!(e.contains("2 questions") && e.contains("exam.max_questions"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    let mut a = args(SET);
    a.categories = Some(vec!["recall".into()]);
    assert!(new_result(&a, true, 1).is_ok(), "counted after `categories`");
}

#[test]
fn results_are_kept_listed_oldest_first_pruned_and_an_unreadable_one_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let store = ResultStore::open(dir.path()).unwrap();
    let mut made = Vec::new();
    for i in 0..4 {
        let (mut r, _) = new_result(&args(SET), true, 1000).unwrap();
        r.summary.started_at = 1000.0 + f64::from(i);
        if i < 3 {
            r.summary.status = ExamStatus::Done.as_str().into();
        }
        store.save(&r).unwrap();
        made.push(r);
    }
    assert_eq!(
        store.load(&made[2].summary.id).unwrap(),
        Some(made[2].clone())
    );
    assert_eq!(store.load("not-an-id").unwrap(), None);
    let listed: Vec<f64> = store.summaries().iter().map(|s| s.started_at).collect();
    assert_eq!(listed, vec![1000.0, 1001.0, 1002.0, 1003.0]);
    // Keep 1 finished run: the two oldest finished go; the running one is never pruned.
    store.prune(1);
    let left: Vec<String> = store.summaries().into_iter().map(|s| s.id).collect();
    assert_eq!(
        left,
        vec![made[2].summary.id.clone(), made[3].summary.id.clone()]
    );
    // A torn or foreign file is set aside, not fatal, not lost.
    let bad = dir
        .path()
        .join("results")
        .join(format!("{}.json", "a".repeat(32)));
    std::fs::write(&bad, b"{ not json").unwrap();
    assert_eq!(store.all().len(), 2);
    assert!(!bad.exists());
    assert!(dir
        .path()
        .join("results")
        .join(format!("{}.json.unreadable", "a".repeat(32)))
        .exists());
}

#[test]
fn a_taught_task_is_waited_for_until_it_is_remembered_not_only_until_it_is_done() {
    use super::run::settled;
    use crate::ports::{TaskState, TaskStatus};
    let mut t = TaskState::new("t".into(), "My cat is called Pixel.".into());
    let remembered = |t: &TaskState| t.remembered;
    t.status = TaskStatus::Running;
    assert!(!settled(&t, false, |_| false));
    t.status = TaskStatus::Done;
    assert!(
        settled(&t, false, |_| false),
        "an answer waits for the task to end"
    );
    // The hand-over to memory follows the answer: a done task not yet remembered is still waited for.
    assert!(!settled(&t, true, remembered));
    t.remembered = true;
    assert!(settled(&t, true, remembered));
    // A task that failed is not waited on for memory it will never reach.
    t.remembered = false;
    t.status = TaskStatus::Failed;
    assert!(settled(&t, true, remembered));
}
