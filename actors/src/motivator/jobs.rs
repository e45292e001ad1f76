//! The Motivator's jobs: the forwarder (hub → mailbox), the ticker, and one job per phrasing, goal start and
//! reconciliation. Each is a linked child (`crate::job`): it dies with the actor, and its failure is seen.

use std::time::Duration;

use ractor::{ActorProcessingErr, ActorRef};
use tokio::sync::broadcast::error::RecvError;

use super::actor::Mind;
use super::messages::{MotivatorJob, MotivatorMsg, PhraseReply};
use super::phrase::{self, Situation};
use super::Goal;
use crate::llm::{ChatMessage, Role};
use crate::ports::GoalOrigin;
use crate::ports::ThinkRequest;

impl Mind {
    /// Starts the forwarder and the ticker. The forwarder subscribes before this returns, so no event
    /// published after the Motivator started is missed.
    pub(super) async fn start_jobs(
        &mut self,
        myself: &ActorRef<MotivatorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let mut rx = self.args.hub.subscribe();
        let me = myself.clone();
        let forward = async move {
            loop {
                match rx.recv().await {
                    // Streamed tokens are most of the traffic and feed no trigger: not worth a message each.
                    Ok(p) if matches!(p.event, crate::events::Event::TaskToken { .. }) => {}
                    Ok(p) => {
                        if me.cast(MotivatorMsg::Event(p)).is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(
                            event = "motivator.events_lagged",
                            missed = n,
                            "the motivator fell behind the event hub; some events were not read"
                        )
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        };
        self.jobs
            .spawn(&myself.get_cell(), MotivatorJob::Forward, forward)
            .await?;
        let (me, settings) = (myself.clone(), self.args.settings.clone());
        let tick = async move {
            loop {
                let every = Duration::from_millis(settings.load().motivator.tick_ms);
                tokio::time::sleep(every).await;
                if me.cast(MotivatorMsg::Tick).is_err() {
                    return;
                }
            }
        };
        self.jobs
            .spawn(&myself.get_cell(), MotivatorJob::Tick, tick)
            .await?;
        Ok(())
    }

    /// Asks the phrasing persona for `goal`'s text once no task has been queued or running for
    /// `motivator.quiet_ms` (a person's answer never waits for a goal's phrasing).
    pub(super) async fn phrase(&mut self, myself: &ActorRef<MotivatorMsg>, goal: &Goal) {
        let s = self.settings();
        let situation = Situation {
            tools: self.args.hub.snapshot().1.tools.keys().cloned().collect(),
            finished_tasks: self.finished_tasks,
        };
        let prompt = phrase::prompt(goal, &self.goals, &situation, s.prompt_goals);
        let (hub, personas, me, settings) = (
            self.args.hub.clone(),
            self.args.personas.clone(),
            myself.clone(),
            self.args.settings.clone(),
        );
        let (persona, id) = (s.persona.clone(), goal.id.clone());
        let work = async move {
            let mut quiet_since: Option<std::time::Instant> = None;
            loop {
                let m = settings.load().motivator.clone();
                if hub.running_tasks() > 0 {
                    quiet_since = None;
                } else if quiet_since
                    .get_or_insert_with(std::time::Instant::now)
                    .elapsed()
                    >= Duration::from_millis(m.quiet_ms)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(m.tick_ms)).await;
            }
            let req = ThinkRequest {
                messages: vec![ChatMessage::new(Role::User, prompt)],
                tools: Vec::new(),
                format: Some(phrase::schema()),
                tokens: None,
                sample: 0,
            };
            let reply: PhraseReply = personas
                .think(&persona, req)
                .await
                .map(|t| {
                    let used = t.response.prompt_tokens + t.response.completion_tokens;
                    (t.persona, t.response.content, used)
                })
                .map_err(|e| e.to_string());
            let _ = me.cast(MotivatorMsg::Phrased(id, reply));
        };
        if let Err(e) = self
            .jobs
            .spawn(
                &myself.get_cell(),
                MotivatorJob::Phrase(goal.id.clone()),
                work,
            )
            .await
        {
            self.phrased(&goal.id, Err(format!("the phrase job did not start: {e}")));
        }
    }

    /// Asks the orchestrator for the goal's task (again, after a restart: it answers the same task).
    pub(super) async fn start(&mut self, myself: &ActorRef<MotivatorMsg>, goal: &Goal) {
        let origin = GoalOrigin {
            goal: goal.id.clone(),
            trigger: goal.trigger.as_str().into(),
            reason: goal.reason.clone(),
            evidence: goal.evidence.clone(),
            persona: goal.persona.clone(),
        };
        let (runner, me, text, id) = (
            self.args.runner.clone(),
            myself.clone(),
            goal.text.clone(),
            goal.id.clone(),
        );
        let work = async move {
            let r = runner.start(text, origin).await;
            let _ = me.cast(MotivatorMsg::Started(id, r));
        };
        if let Err(e) = self
            .jobs
            .spawn(
                &myself.get_cell(),
                MotivatorJob::Start(goal.id.clone()),
                work,
            )
            .await
        {
            tracing::error!(event = "motivator.start_failed", goal = %goal.id, error = %e, "start job did not start");
        }
    }

    /// Asks the orchestrator how a goal's task found running at start stands.
    pub(super) async fn reconcile(&mut self, myself: &ActorRef<MotivatorMsg>, goal: &Goal) {
        let Some(task) = goal.task.clone() else {
            return;
        };
        let (runner, me, id) = (self.args.runner.clone(), myself.clone(), goal.id.clone());
        let work = async move {
            let r = runner.status(task).await;
            let _ = me.cast(MotivatorMsg::Reconciled(id, r));
        };
        if let Err(e) = self
            .jobs
            .spawn(
                &myself.get_cell(),
                MotivatorJob::Reconcile(goal.id.clone()),
                work,
            )
            .await
        {
            tracing::error!(event = "motivator.reconcile_failed", goal = %goal.id, error = %e, "reconcile job did not start");
        }
    }
}
