//! The exam's wire types on trial: question sets parsed and refused, results summarised, the table drawn.

use super::*;

#[test]
fn a_set_parses_and_each_mistake_names_its_line() {
    let ok = "# a comment\n\n{\"id\":\"f-1\",\"category\":\"fact\",\"question\":\"Capital of France?\",\"check\":{\"any\":[\"Paris\"]}}\n\
              {\"id\":\"r-1\",\"category\":\"recall\",\"question\":\"My cat?\",\"teach\":\"My cat is Pixel.\",\"check\":{\"regex\":\"pixel\"},\"max_words\":5}\n";
    let set = parse_set(ok).unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set[1].teach.as_deref(), Some("My cat is Pixel."));
    let dup = format!(
        "{}\n{}",
        ok.lines().nth(2).unwrap(),
        ok.lines().nth(2).unwrap()
    );
    assert!(parse_set(&dup).unwrap_err().contains("used twice"));
    let unknown = r#"{"id":"a","category":"c","question":"q","check":{"any":["x"]},"answr":1}"#;
    assert!(parse_set(unknown).unwrap_err().contains("line 1"));
    let two = r#"{"id":"a","category":"c","question":"q","check":{"any":["x"],"number":3}}"#;
    assert!(parse_set(two).unwrap_err().contains("exactly one"));
    let none = r#"{"id":"a","category":"c","question":"q","check":{}}"#;
    assert!(parse_set(none).unwrap_err().contains("exactly one"));
    let blank = r#"{"id":"a","category":"c","question":"  ","check":{"any":["x"]}}"#;
    assert!(parse_set(blank).unwrap_err().contains("blank"));
    let bad_id = r#"{"id":"a b","category":"c","question":"q","check":{"any":["x"]}}"#;
    assert!(parse_set(bad_id).unwrap_err().contains("`id`"));
    let tol = r#"{"id":"a","category":"c","question":"q","check":{"any":["x"],"tolerance":1}}"#;
    assert!(parse_set(tol).unwrap_err().contains("tolerance"));
    assert!(parse_set("\n# nothing\n")
        .unwrap_err()
        .contains("no question"));
    assert!(parse_set("not json").unwrap_err().starts_with("line 1"));
}

fn answer(pass: bool, ms: u64) -> ExamAnswer {
    ExamAnswer {
        pass,
        ms,
        ..Default::default()
    }
}

#[test]
fn rescoring_counts_per_category_in_the_sets_order() {
    let q = |id: &str, c: &str| ExamQuestion {
        id: id.into(),
        category: c.into(),
        question: "q".into(),
        check: ExamCheck {
            any: Some(vec!["x".into()]),
            ..Default::default()
        },
        max_words: None,
        teach: None,
        inner_ok: false,
    };
    let r = |id: &str, c: &str, soc: bool, bare: bool, ms: u64| QuestionResult {
        id: id.into(),
        category: c.into(),
        question: "q".into(),
        society: answer(soc, ms),
        bare: Some(answer(bare, 10)),
        judge: Some(JudgeVerdict {
            score: Some(5),
            keep: true,
            agrees: soc,
        }),
    };
    let mut res = ExamResult {
        summary: ExamSummary {
            baseline: true,
            ..Default::default()
        },
        error: None,
        fingerprint: Fingerprint::default(),
        questions: vec![q("b1", "b"), q("a1", "a"), q("a2", "a")],
        taught: vec![],
        results: vec![
            r("b1", "b", true, false, 300),
            r("a1", "a", true, true, 100),
            r("a2", "a", false, true, 200),
        ],
        judge: true,
    };
    res.rescore();
    let s = &res.summary;
    assert_eq!(s.categories[0].category, "b");
    assert_eq!(
        (
            s.categories[1].n,
            s.categories[1].society,
            s.categories[1].bare
        ),
        (2, 1, Some(2))
    );
    assert!((s.society_pct - 200.0 / 3.0).abs() < 1e-9);
    assert_eq!(s.bare_pct, Some(200.0 / 3.0));
    assert_eq!(s.median_ms, 200);
    assert_eq!(s.judge_agreement, Some(2.0 / 3.0));
    let t = table(s);
    assert!(t.contains("overall"), "{t}");
    assert!(t.lines().nth(1).unwrap().starts_with("b "), "{t}");
}
