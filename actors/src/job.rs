//! Work under supervision: a [`Job`] is a one-shot child actor that runs one piece of an organ's work (a
//! task run, a forge run, a consolidation pass, an index build, a store query) and stops.
//!
//! Why not `tokio::spawn`: a panic in a detached tokio task is invisible — it unwinds, the task ends, and
//! whoever waited for its answer times out much later while the organ believes the work is still going. A
//! job is linked to the organ's actor, so ractor reports its panic or error to the organ as a supervision
//! event; the organ publishes `actor.failed` ([`Jobs::supervise`]) and decides what the failure means (the
//! orchestrator resumes or fails the task; others answer the waiting caller with `Stopped` because the reply
//! port died with the job). A job dies with its organ: ractor kills an actor's children when it exits, so a
//! restarted organ never inherits a stray job of its previous life.
//!
//! ```text
//!   organ actor ──Jobs::spawn(label, future)──▶ Job (linked child) ── runs future ── stops
//!        ▲                                            │ panic / error
//!        └──── SupervisionEvent::ActorFailed ◀────────┘  → Jobs::supervise → `actor.failed` + JobEnd::Failed
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::events::{Event, EventHub};

/// The work a job runs.
pub type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The job actor.
#[derive(Debug, Default, Clone, Copy)]
pub struct Job;

/// A job's only message: run the work (sent to itself once it is up, so the work runs inside `handle`,
/// where ractor catches a panic and reports it to the parent).
#[derive(Debug, ractor_cluster::RactorMessage)]
pub struct Run;

impl Actor for Job {
    type Msg = Run;
    type State = Option<Work>;
    type Arguments = Work;

    async fn pre_start(
        &self,
        myself: ActorRef<Run>,
        work: Work,
    ) -> Result<Option<Work>, ActorProcessingErr> {
        myself.cast(Run)?;
        Ok(Some(work))
    }

    async fn handle(
        &self,
        myself: ActorRef<Run>,
        _: Run,
        work: &mut Option<Work>,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(work) = work.take() {
            work.await;
        }
        myself.stop(None);
        Ok(())
    }
}

/// How a job ended, as its owner learns it from a supervision event.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEnd {
    /// It ran to the end, or was stopped or killed on purpose.
    Stopped,
    /// It panicked or returned an error; the text says what.
    Failed(String),
}

/// The jobs one organ runs: their labels by actor id, and the path under which their failures are reported.
///
/// `L` is the organ's label type: what a job is, shown as the last part of its tree path in events
/// (`root/orchestrator/task/<id>`) and handed back, typed, when the job ends — so an organ that acts on a job's
/// end matches on its own enum instead of parsing a string. Organs that only name their jobs keep `String`.
#[derive(Debug)]
pub struct Jobs<L = String> {
    path: String,
    hub: Arc<EventHub>,
    running: HashMap<ActorId, L>,
}

impl<L: std::fmt::Display> Jobs<L> {
    /// Jobs of the organ at tree path `path` (e.g. `root/orchestrator`), reporting to `hub`.
    pub fn new(path: impl Into<String>, hub: Arc<EventHub>) -> Self {
        Self {
            path: path.into(),
            hub,
            running: HashMap::new(),
        }
    }

    /// Starts `work` as a job linked to `owner`. `label` names it in events (`<path>/<label>`) and is handed
    /// back when it ends. Fails only when the actor cannot be spawned (the runtime is shutting down).
    pub async fn spawn(
        &mut self,
        owner: &ActorCell,
        label: impl Into<L>,
        work: impl Future<Output = ()> + Send + 'static,
    ) -> Result<ActorRef<Run>, ractor::SpawnErr> {
        let (job, _) = Job::spawn_linked(None, Job, Box::pin(work), owner.clone()).await?;
        self.running.insert(job.get_id(), label.into());
        Ok(job)
    }

    /// How many jobs are running.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether no job is running.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Reads a supervision event of the owner. For one of its jobs that ended: forgets it, publishes
    /// `actor.failed` if it failed (the one structured event for the failure), and returns its label and how
    /// it ended. `None` for events about other children.
    pub fn supervise(&mut self, event: &SupervisionEvent) -> Option<(L, JobEnd)> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => self
                .running
                .remove(&cell.get_id())
                .map(|label| (label, JobEnd::Stopped)),
            SupervisionEvent::ActorFailed(cell, err) => {
                let label = self.running.remove(&cell.get_id())?;
                let reason = err.to_string();
                self.hub.publish(Event::ActorFailed {
                    actor: format!("{}/{label}", self.path),
                    reason: reason.clone(),
                });
                Some((label, JobEnd::Failed(reason)))
            }
            _ => None,
        }
    }
}

/// Coalesces requests for a job that must not run twice at once (an index build): at most one run at a
/// time, and a request made while it runs is not lost but answered by one more run afterwards.
#[derive(Debug, Default)]
pub struct Coalesce {
    running: AtomicBool,
    again: AtomicBool,
}

impl Coalesce {
    /// Asks for a run: true if the caller must start it, false if a running one will cover the request.
    pub fn request(&self) -> bool {
        self.again.store(true, Ordering::SeqCst);
        !self.running.swap(true, Ordering::SeqCst)
    }

    /// The runner starts a run's work: requests so far are covered by it.
    pub fn begin(&self) {
        self.again.store(false, Ordering::SeqCst);
    }

    /// The runner finished a run: true if it must run again for a request made meanwhile.
    pub fn finish(&self) -> bool {
        self.running.store(false, Ordering::SeqCst);
        // A request after the release starts its own run; one before it (still flagged) is ours.
        self.again.load(Ordering::SeqCst) && !self.running.swap(true, Ordering::SeqCst)
    }

    /// The run failed: release without running again (the actor restarts).
    pub fn abandon(&self) {
        self.running.store(false, Ordering::SeqCst);
    }

    /// Whether a run is in progress.
    pub fn running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::mpsc;

    /// An owner that runs jobs on request and reports how each ended.
    struct Owner;

    #[derive(ractor_cluster::RactorMessage)]
    enum OwnerMsg {
        Start(&'static str, bool),
    }

    struct OwnerState {
        jobs: Jobs,
        ends: mpsc::UnboundedSender<(String, JobEnd)>,
    }

    impl Actor for Owner {
        type Msg = OwnerMsg;
        type State = OwnerState;
        type Arguments = (Arc<EventHub>, mpsc::UnboundedSender<(String, JobEnd)>);

        async fn pre_start(
            &self,
            _: ActorRef<OwnerMsg>,
            (hub, ends): Self::Arguments,
        ) -> Result<OwnerState, ActorProcessingErr> {
            Ok(OwnerState {
                jobs: Jobs::new("root/owner", hub),
                ends,
            })
        }

        async fn handle(
            &self,
            myself: ActorRef<OwnerMsg>,
            msg: OwnerMsg,
            state: &mut OwnerState,
        ) -> Result<(), ActorProcessingErr> {
            let OwnerMsg::Start(label, panics) = msg;
            state
                .jobs
                .spawn(&myself.get_cell(), label, async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if panics {
                        panic!("job {label} exploded");
                    }
                })
                .await?;
            Ok(())
        }

        async fn handle_supervisor_evt(
            &self,
            _: ActorRef<OwnerMsg>,
            event: SupervisionEvent,
            state: &mut OwnerState,
        ) -> Result<(), ActorProcessingErr> {
            if let Some(end) = state.jobs.supervise(&event) {
                let _ = state.ends.send(end);
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_panicking_job_is_reported_and_its_owner_lives_on() {
        let hub = EventHub::new(64);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (owner, _) = Actor::spawn(None, Owner, (hub.clone(), tx)).await.unwrap();
        owner.cast(OwnerMsg::Start("good", false)).unwrap();
        owner.cast(OwnerMsg::Start("bad", true)).unwrap();
        let mut ends = Vec::new();
        for _ in 0..2 {
            ends.push(
                tokio::time::timeout(Duration::from_secs(5), rx.recv())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        ends.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(ends[1], ("good".into(), JobEnd::Stopped));
        assert_eq!(ends[0].0, "bad");
        match &ends[0].1 {
            JobEnd::Failed(why) => assert!(why.contains("exploded"), "{why}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        let (_, view) = hub.snapshot();
        let failed = &view.actors["root/owner/bad"];
        assert_eq!(failed.status, "failed");
        assert!(failed
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("exploded"));
        assert_eq!(
            owner.get_status(),
            ractor::ActorStatus::Running,
            "the owner survives its job's panic"
        );
        // A job dies with its owner.
        owner.cast(OwnerMsg::Start("orphan", false)).unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        owner.stop(None);
    }

    #[test]
    fn a_request_during_a_run_gets_one_more_run_and_never_two_runners() {
        let c = Coalesce::default();
        assert!(c.request(), "the first request starts a run");
        c.begin();
        assert!(
            !c.request(),
            "a request during the run does not start a second runner"
        );
        assert!(!c.request());
        assert!(c.running());
        assert!(
            c.finish(),
            "the requests made during the run get one more run"
        );
        c.begin();
        assert!(!c.finish(), "nothing new was asked: stop");
        assert!(!c.running());
        assert!(
            c.request(),
            "after the runner stopped, a request starts a new one"
        );
        c.begin();
        c.abandon();
        assert!(!c.running());
        assert!(c.request());
    }
}
