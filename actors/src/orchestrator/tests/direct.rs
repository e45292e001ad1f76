//! The direct path: exact computation by the built-in tools, short questions answered in their form, notes
//! from memory quoted.

use super::*;

/// Memory holding one thing a person said.
struct OneNote;

#[async_trait]
impl MemoryHook for OneNote {
    async fn retrieve(&self, _query: &str) -> Result<Vec<String>, PortError> {
        Ok(vec![
            "The person said earlier: \"Please remember that my cat is called Pixel.\"".into(),
            "The person said earlier: \"My dentist appointment is next month.\"".into(),
        ])
    }
    async fn ingest(&self, _task: &TaskState) -> Result<(), PortError> {
        Ok(())
    }
}

#[tokio::test]
async fn the_direct_path_answers_computations_exactly_and_short_questions_in_their_form() {
    let _turn = TURN.lock().await;
    let rig = Rig::new(Some(Arc::new(OneNote)), None).await;
    rig.orchestrator(|o| o.route = crate::settings::RouteMode::Auto);
    // Exact computation: the tool's result is the answer, whatever the model would have written.
    let s = rig.submit("What is 4821 multiplied by 397?").await.unwrap();
    let t = rig.finished(&s.id).await;
    assert_eq!(t.status, TaskStatus::Done, "{t:?}");
    let nodes: Vec<Node> = t.steps.iter().map(|r| r.node).collect();
    assert_eq!(
        nodes,
        [Node::Route, Node::Draft, Node::Synthesize],
        "{:?}",
        t.steps
    );
    assert_eq!(t.tools_used.len(), 1);
    assert_eq!(t.tools_used[0].name, "calculate");
    assert_eq!(t.result.as_deref(), Some("1913937."));
    // Route and draft made no model call; only the answer did.
    assert!(t.steps[0].model.is_empty() && t.steps[1].model.is_empty());
    // A note that shares the task's words is put before the answer; one that does not is not.
    let s = rig.submit("What is my cat called?").await.unwrap();
    let t = rig.finished(&s.id).await;
    let nodes: Vec<Node> = t.steps.iter().map(|r| r.node).collect();
    assert_eq!(nodes, [Node::Route, Node::Research, Node::Synthesize]);
    let ctx = t.context.clone().unwrap_or_default();
    assert!(ctx.contains("Pixel") && !ctx.contains("dentist"), "{ctx}");
    let asked = &t.exchanges.last().unwrap().messages.last().unwrap().content;
    assert!(
        asked.contains("Pixel") && asked.ends_with("What is my cat called?"),
        "{asked}"
    );
    // No inner vocabulary in what the model is asked.
    for word in ["Architect", "BRICK", "ROBIN", "BABS", "draft", "plan"] {
        assert!(!asked.contains(word), "{word} in {asked}");
    }
    // A yes/no question is held to yes or no by a grammar, and read back as a person reads it.
    let s = rig.submit("Answer yes or no: is fire hot?").await.unwrap();
    let t = rig.finished(&s.id).await;
    assert_eq!(t.result.as_deref(), Some("Yes."));
    assert!(t.exchanges.iter().all(|x| x.persona == "ALFRED"));
    // The same question under route = "full" takes the Contrapunto.
    rig.orchestrator(|o| o.route = crate::settings::RouteMode::Full);
    let s = rig.submit("What is 4821 multiplied by 397?").await.unwrap();
    let t = rig.finished(&s.id).await;
    assert!(
        t.steps.iter().any(|r| r.node == Node::Critique),
        "{:?}",
        t.steps
    );
    rig.stop().await;
}

#[tokio::test]
async fn each_of_a_direct_answers_samples_is_drawn_with_its_own_seed() {
    let _turn = TURN.lock().await;
    let rig = Rig::new(None, None).await;
    rig.orchestrator(|o| o.route = crate::settings::RouteMode::Auto);
    let samples = rig.cog.settings.load().orchestrator.direct_samples;
    assert!(samples > 1, "the shipped settings sample more than once");
    rig.seeds.lock().unwrap().clear();
    let s = rig.submit("Who wrote the novel Moby-Dick?").await.unwrap();
    let t = rig.finished(&s.id).await;
    assert_eq!(t.status, TaskStatus::Done, "{t:?}");
    // Only ALFRED's answer made model calls, one per sample, each with the next seed (the rig's is 1): with
    // one seed for all, the samples of one request were one answer repeated, and the vote chose nothing.
    let seeds = rig.seeds.lock().unwrap().clone();
    let expected: Vec<i32> = (1..=samples as i32).collect();
    assert_eq!(seeds, expected);
    rig.stop().await;
}
