//! A human's rating, the trigger, and grounded direct answers admitted without the judge.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_human_rating_overrides_the_judge_both_ways_and_is_reapplied_after_a_restart() {
    let mut rig = Rig::new(|_| {}).await;
    let liked = task(1, "Why do moths fly to lanterns?", DRAFT, ANSWER);
    let disliked = task(
        2,
        "Why is the sky blue?",
        "A POOR draft about the sky: air scatters short blue wavelengths more than red ones.",
        "A POOR answer: the sky is blue because air scatters blue sunlight the most.",
    );
    rig.curate(&liked).await;
    rig.curate(&disliked).await;
    rig.settled().await;
    assert_eq!(rig.examples("BRICK", Split::Train).len(), 1);

    let out = rig.rate(&liked.id, 1).await;
    assert_eq!((out.removed, out.admitted), (2, 0));
    assert!(rig.examples("BRICK", Split::Train).is_empty());
    assert_eq!(rig.rejected("BRICK", "human_rejected").await, 1);

    let out = rig.rate(&disliked.id, 5).await;
    assert_eq!((out.removed, out.admitted), (0, 2));
    let brick = rig.examples("BRICK", Split::Train);
    assert_eq!(brick.len(), 1);
    assert_eq!(brick[0].lineage.task, disliked.id);
    assert_eq!(brick[0].lineage.human.as_ref().map(|h| h.score), Some(5));

    // A rating before curation: applied when the exchanges come.
    let early = task(
        3,
        "Why do cats purr?",
        "A POOR draft: cats purr by twitching their larynx muscles as they breathe in and out.",
        "Cats purr through rapid larynx twitches, mostly when content and sometimes to self-soothe.",
    );
    let out = rig.rate(&early.id, 5).await;
    assert_eq!(out.pending, 0);
    rig.curate(&early).await;
    rig.settled().await;
    assert!(rig
        .examples("BRICK", Split::Train)
        .iter()
        .any(|e| e.lineage.task == early.id && e.lineage.judge.is_none()));

    // Restart: the ratings are re-applied, and change nothing more.
    let before = (
        rig.examples("BRICK", Split::Train).len(),
        rig.examples("ALFRED", Split::Train).len(),
    );
    rig.restart().await;
    rig.settled().await;
    assert_eq!(
        (
            rig.examples("BRICK", Split::Train).len(),
            rig.examples("ALFRED", Split::Train).len()
        ),
        before
    );
    assert!(rig
        .examples("BRICK", Split::Train)
        .iter()
        .all(|e| e.lineage.task != liked.id));

    let bad = ractor::call!(rig.curator, |reply| CuratorMsg::Rate {
        task: liked.id.clone(),
        score: 9,
        comment: None,
        reply
    })
    .unwrap();
    assert!(matches!(bad, Err(CuratorError::Invalid(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trigger_fires_once_per_threshold_crossing() {
    let mut rig = Rig::new(|c| {
        c.min_new_examples = 3;
        c.nodes = vec!["draft".into()];
    })
    .await;
    let mut events = rig.hub.subscribe();
    let mut triggers = Vec::new();
    for i in 0..7u32 {
        let t = task(
            10 + i,
            &format!("Distinct question {i} about subject {i}"),
            &format!("Distinct draft number {i}, with its own words on subject {i} {i} {i}."),
            "unused",
        );
        rig.curate(&t).await;
        rig.settled().await;
        if i == 3 {
            rig.restart().await;
        }
    }
    while let Ok(p) = events.try_recv() {
        if let Event::CuratorTrigger {
            persona,
            new_examples,
            train,
            delivered,
            ..
        } = &p.event
        {
            triggers.push((persona.clone(), *new_examples, *train, *delivered));
        }
    }
    assert_eq!(
        triggers,
        vec![
            ("BRICK".to_string(), 3, 3, false),
            ("BRICK".to_string(), 3, 6, false)
        ]
    );
    let s = rig.stats().await;
    assert_eq!(s.personas["BRICK"].triggers, 2);
    assert_eq!(s.personas["BRICK"].new_since_trigger, 1);
}

/// A done direct task answering `text` from the note `note` (or from a calculator result), with one ALFRED
/// answer.
fn direct_task(
    id_seed: u32,
    text: &str,
    note: Option<&str>,
    exact: Option<&str>,
    answer: &str,
) -> TaskState {
    let mut t = TaskState::new(format!("{id_seed:032x}"), text.into());
    t.status = TaskStatus::Done;
    t.reading = Some(crate::orchestrator::reading::Reading {
        path: crate::orchestrator::reading::Path::Direct,
        ..Default::default()
    });
    t.context = note.map(str::to_string);
    if let Some(x) = exact {
        t.tools_used.push(ToolUse {
            name: "calculate".into(),
            arguments: json!({"expression": "382*47"}),
            ok: true,
            result: json!({"text": x}).to_string(),
        });
    }
    t.exchanges = vec![exchange(4, Node::Synthesize, "ALFRED", answer)];
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_answer_that_holds_its_grounding_is_admitted_without_the_judge_even_when_short() {
    let rig = Rig::new(|_| {}).await;
    let note = "The person said earlier: My dentist is Dr. Okafor.";
    // The judge double would score these POOR (1): only the grounding admits them.
    for (i, t) in [
        direct_task(
            60,
            "Who is my dentist?",
            Some(note),
            None,
            "Dr. Okafor. POOR",
        ),
        direct_task(
            61,
            "What is 382 times 47?",
            None,
            Some("17954"),
            "It is 17954. POOR",
        ),
        direct_task(
            62,
            "Remind me who my dentist is.",
            Some(note),
            None,
            "Okafor.",
        ),
    ]
    .iter()
    .enumerate()
    {
        rig.curate(t).await;
        rig.settled().await;
        let d = rig.decisions("ALFRED");
        assert_eq!(d.len(), i + 1, "{d:?}");
        let last = d.last().unwrap();
        assert_eq!(last.outcome, "accepted", "{last:?}");
        assert!(last.detail.starts_with("grounded"), "{last:?}");
        assert_eq!(last.score, None, "the judge was not asked: {last:?}");
    }
    // Not grounded: the answer takes nothing from the note, states another number, states the result and
    // a wrong one beside it, repeats its prompt's framing, invents details, or the switch is off.
    for t in [
        direct_task(
            66,
            "What is 144 divided by 12?",
            None,
            Some("12"),
            "144 divided by 12 equals 9. POOR",
        ),
        direct_task(
            67,
            "What is 382 times 47?",
            None,
            Some("17954"),
            "The exact result, computed by a tool: 17954. POOR",
        ),
        direct_task(
            68,
            "Who is my dentist?",
            Some(note),
            None,
            "Dr. Okafor, a renowned dental hygienist in Australia. POOR",
        ),
        direct_task(
            63,
            "Who is my dentist?",
            Some(note),
            None,
            "Someone kind and patient. POOR",
        ),
        direct_task(
            64,
            "What is 382 times 47?",
            None,
            Some("17954"),
            "About eighteen thousand. POOR",
        ),
    ] {
        rig.curate(&t).await;
        rig.settled().await;
        let last = rig.decisions("ALFRED").pop().unwrap();
        assert_eq!(last.outcome, "judge_low", "{last:?}");
    }
    let off = Rig::new(|c| c.admit_grounded = false).await;
    off.curate(&direct_task(
        65,
        "Who is my dentist?",
        Some(note),
        None,
        "Dr. Okafor, your dentist. POOR",
    ))
    .await;
    off.settled().await;
    assert_eq!(off.decisions("ALFRED").pop().unwrap().outcome, "judge_low");
}
