//! A persona that crashes under a task's model call: the call is asked again of the next generation, for as
//! long as `orchestrator.persona_outwait_ms` allows, and the step fails with the reason only past it.

use super::*;

#[tokio::test]
async fn a_persona_that_crashes_mid_call_is_retried_on_its_next_generation() {
    let _turn = TURN.lock().await;
    let rig = Rig::slow_drafts(400).await;
    let before = rig.personas.current("BRICK").unwrap().generation;
    let s = rig.submit("survive BRICK's crash").await.unwrap();
    rig.after_steps(&s.id, 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // BRICK is drafting: crash it under the call.
    rig.personas.current("BRICK").unwrap().crash().unwrap();
    let t = rig.finished(&s.id).await;
    assert_eq!(t.status, TaskStatus::Done, "{t:?}");
    assert_eq!(t.steps[1].node, Node::Draft);
    assert!(rig.personas.current("BRICK").unwrap().generation > before);
    rig.stop().await;
}

impl Rig {
    /// Drafting calls the scripted model has begun.
    fn drafts(&self) -> usize {
        self.drafts.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Crashes BRICK under each of the `times` drafting calls after the first `from`: once each has begun (the
    /// rig's slow drafts keep it in flight), so every crash loses a call and its retry is the next one.
    async fn crash_under_drafts(&self, from: usize, times: usize) {
        for i in 1..=times {
            let mut waited = 0;
            while self.drafts() < from + i {
                assert!(waited < 1000, "drafting call {} never began", from + i);
                tokio::time::sleep(Duration::from_millis(10)).await;
                waited += 1;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.personas.current("BRICK").unwrap().crash().unwrap();
        }
    }
}

#[tokio::test]
async fn a_task_outwaits_its_personas_restarts_and_fails_with_the_reason_only_past_the_outwait() {
    let _turn = TURN.lock().await;
    let rig = Rig::slow_drafts(400).await;
    // Four losses in a row — more than the old count of two retries allowed — and the task still ends done.
    let before = rig.personas.current("BRICK").unwrap().generation;
    let from = rig.drafts();
    let s = rig.submit("outwait a crash storm").await.unwrap();
    rig.crash_under_drafts(from, 4).await;
    let t = rig.finished(&s.id).await;
    assert_eq!(t.status, TaskStatus::Done, "{t:?}");
    assert!(rig.personas.current("BRICK").unwrap().generation >= before + 4);
    // The lost calls were asked again: four lost, then the one that answered (and any later rounds').
    assert!(
        rig.drafts() >= from + 5,
        "{} drafting calls",
        rig.drafts() - from
    );
    // With no outwait, the first loss fails the step, and the reason names the setting.
    rig.orchestrator(|o| o.persona_outwait_ms = 0);
    let from = rig.drafts();
    let s = rig.submit("no patience for crashes").await.unwrap();
    rig.crash_under_drafts(from, 1).await;
    let t = rig.finished(&s.id).await;
    assert_eq!(t.status, TaskStatus::Failed, "{t:?}");
    let why = t.error.unwrap_or_default();
    assert!(
        why.contains("BRICK") && why.contains("persona_outwait_ms"),
        "{why}"
    );
    rig.stop().await;
}
