//! A finished task's hand-over to memory and the Curator: stored when the orchestrator starts again, and
//! delivered to a Curator that was restarting, with no daemon restart.

use super::*;

/// A memory port that is down for the first ingest, then stores (and counts) what it is given.
#[derive(Default)]
struct FlakyMemory {
    up: std::sync::atomic::AtomicBool,
    stored: Mutex<Vec<String>>,
}

#[async_trait]
impl MemoryHook for FlakyMemory {
    async fn retrieve(&self, _query: &str) -> Result<Vec<String>, PortError> {
        Ok(Vec::new())
    }

    async fn ingest(&self, task: &TaskState) -> Result<(), PortError> {
        if !self.up.swap(true, Ordering::SeqCst) {
            return Err(PortError::Refused("memory is down".into()));
        }
        self.stored.lock().unwrap().push(task.id.clone());
        Ok(())
    }
}

#[tokio::test]
async fn a_done_task_not_yet_in_memory_is_stored_when_the_orchestrator_starts_again() {
    let _turn = TURN.lock().await;
    let memory = Arc::new(FlakyMemory::default());
    let mut rig = Rig::new(Some(memory.clone()), None).await;
    let s = rig.submit("remember me later").await.unwrap();
    assert_eq!(rig.finished(&s.id).await.status, TaskStatus::Done);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        memory.stored.lock().unwrap().is_empty(),
        "the first ingest failed"
    );
    assert!(!rig.store.load(&s.id).unwrap().remembered);
    rig.restart_orchestrator().await;
    for _ in 0..200 {
        if rig.store.load(&s.id).unwrap().remembered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(rig.store.load(&s.id).unwrap().remembered);
    assert_eq!(*memory.stored.lock().unwrap(), vec![s.id.clone()]);
    // A further start finds it remembered and stores nothing again.
    rig.restart_orchestrator().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(memory.stored.lock().unwrap().len(), 1);
    rig.stop().await;
}

/// A Curator port that does not answer (restarting) for its first `down` calls, then takes what it is given.
#[derive(Default)]
struct RestartingCurator {
    down: usize,
    calls: AtomicUsize,
    taken: Mutex<Vec<String>>,
}

#[async_trait]
impl CuratorHook for RestartingCurator {
    async fn curate(&self, task: &TaskState) -> Result<(), PortError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.down {
            return Err(PortError::Unreachable(AskError::Restarting {
                organ: "curator",
            }));
        }
        self.taken.lock().unwrap().push(task.id.clone());
        Ok(())
    }
}

#[tokio::test]
async fn a_finished_task_reaches_a_curator_that_was_restarting_without_a_daemon_restart() {
    let _turn = TURN.lock().await;
    let rig = Rig::new(None, None).await;
    let curator = Arc::new(RestartingCurator {
        down: 2,
        ..Default::default()
    });
    // The same cognition with the Curator port plugged in, under a second (unnamed) orchestrator.
    let cog = Arc::new(Cognition {
        personas: rig.cog.personas.clone(),
        tools: rig.cog.tools.clone(),
        hub: rig.cog.hub.clone(),
        settings: rig.cog.settings.clone(),
        store: rig.cog.store.clone(),
        memory: None,
        forge: None,
        inquiry: None,
        curator: Some(curator.clone()),
    });
    let mut s = (*cog.settings.load_full()).clone();
    s.orchestrator.settle_retry_ms = 20;
    cog.settings.store(Arc::new(s));
    let (orch, _) = Actor::spawn(None, Orchestrator, OrchestratorArgs { cog: cog.clone() })
        .await
        .unwrap();
    let sum = ractor::call!(
        orch,
        OrchestratorMsg::Submit,
        "curate me".to_string(),
        None,
        None
    )
    .unwrap()
    .unwrap();
    for _ in 0..300 {
        if rig
            .store
            .load(&sum.id)
            .is_some_and(|t| t.curated && t.status == TaskStatus::Done)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = rig.store.load(&sum.id).unwrap();
    assert!(t.curated, "not handed over: {:?}", t.status);
    assert_eq!(curator.calls.load(Ordering::SeqCst), 3);
    assert_eq!(*curator.taken.lock().unwrap(), vec![sum.id.clone()]);
    // The task's exchanges went with it: one per model call of its persona steps, system message first.
    assert!(!t.exchanges.is_empty());
    assert!(t.exchanges.iter().all(|x| x
        .messages
        .first()
        .is_some_and(|m| m.role == crate::llm::Role::System)));
    orch.stop(None);
    rig.stop().await;
}
