//! The Motivator actor: reads events into evidence, turns proposals into goals within the limits, has them
//! phrased, queues them durably and starts one when no person's task is waiting. Its jobs: the forwarder
//! (hub → mailbox), the ticker, and one job per phrasing, start and reconciliation (`jobs.rs`).

use std::collections::HashSet;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::evidence::{Evidence, Proposal};
use super::messages::{MotivatorArgs, MotivatorJob, MotivatorMsg, PhraseReply};
use super::store::{GoalStore, Saved};
use super::{limits, phrase, Goal, GoalList, GoalStatus, MotivatorError, MotivatorState};
use crate::events::{unix_now, Event};
use crate::job::{JobEnd, Jobs};
use crate::ports::PortError;
use crate::settings::MotivatorSettings;

/// Global name of the Motivator actor.
pub const MOTIVATOR_NAME: &str = "motivator";

/// Bytes of a goal task's answer or error kept as the goal's outcome.
const OUTCOME_BYTES: usize = 500;

/// The Motivator.
#[derive(Debug, Default, Clone, Copy)]
pub struct MotivatorActor;

/// The Motivator's state.
pub struct Mind {
    pub(super) args: MotivatorArgs,
    store: GoalStore,
    /// Paused by command (durable).
    paused: bool,
    /// Whether `motivator.paused` was set at the last look (its changes are announced).
    settings_paused: bool,
    pub(super) goals: Vec<Goal>,
    pub(super) evidence: Evidence,
    pub(super) jobs: Jobs<MotivatorJob>,
    /// Tasks seen finishing in this life (for the phrasing prompt).
    pub(super) finished_tasks: usize,
}

impl Mind {
    pub(super) fn settings(&self) -> MotivatorSettings {
        self.args.settings.load().motivator.clone()
    }

    /// What pauses goals, if anything: a command (durable) or the settings.
    fn paused_by(&self, s: &MotivatorSettings) -> Option<&'static str> {
        if self.paused {
            Some("command")
        } else if s.paused {
            Some("settings")
        } else {
            None
        }
    }

    /// Writes the goal file; the error is logged and returned.
    fn save(&mut self) -> Result<(), MotivatorError> {
        let keep = self.settings().keep_goals;
        let mut saved = Saved {
            paused: self.paused,
            goals: std::mem::take(&mut self.goals),
            counters: self.evidence.counters.clone(),
        };
        saved.prune(keep);
        self.goals = saved.goals.clone();
        self.store.save(&saved).map_err(|e| {
            tracing::error!(event = "motivator.save_failed", path = %self.store.path().display(), error = %e, "goal file not written");
            MotivatorError::Store(e.to_string())
        })
    }

    fn publish_goal(&self, g: &Goal) {
        self.args.hub.publish(Event::MotivatorGoal {
            id: g.id.clone(),
            trigger: g.trigger.as_str().into(),
            status: g.status.as_str().into(),
            persona: g.persona.clone(),
            text: g.text.clone(),
            reason: g.reason.clone(),
            task: g.task.clone(),
        });
    }

    fn index(&self, id: &str) -> Option<usize> {
        self.goals.iter().position(|g| g.id == id)
    }

    /// Moves goal `i` to `status` (with what else `f` changes), saves and publishes.
    fn set_status(&mut self, i: usize, status: GoalStatus, f: impl FnOnce(&mut Goal)) {
        let g = &mut self.goals[i];
        g.status = status;
        if status.is_final() {
            g.ended_at = Some(unix_now());
        }
        f(g);
        let g = g.clone();
        let _ = self.save();
        self.publish_goal(&g);
    }

    pub(super) fn state(&self) -> MotivatorState {
        let s = self.settings();
        let now = unix_now();
        let count = |f: fn(GoalStatus) -> bool| self.goals.iter().filter(|g| f(g.status)).count();
        MotivatorState {
            paused: self.paused_by(&s).map(str::to_string),
            queued: count(|st| matches!(st, GoalStatus::Phrasing | GoalStatus::Queued)),
            running: count(|st| matches!(st, GoalStatus::Starting | GoalStatus::Running)),
            goals_last_hour: self
                .goals
                .iter()
                .filter(|g| now - g.created_at < limits::HOUR_S)
                .count(),
            tokens_today: self.evidence.counters.tokens_today(now),
            daily_tokens: s.daily_tokens,
            importance: self.evidence.counters.importance,
            streak: self.evidence.counters.streak,
            idle_s: (now - self.evidence.last_activity).max(0.0),
        }
    }

    fn list(&self) -> GoalList {
        let mut goals = self.goals.clone();
        goals.sort_by(|a, b| {
            a.status
                .is_final()
                .cmp(&b.status.is_final())
                .then(if a.status.is_final() {
                    b.created_at.total_cmp(&a.created_at)
                } else {
                    b.priority
                        .cmp(&a.priority)
                        .then(a.created_at.total_cmp(&b.created_at))
                })
        });
        GoalList {
            state: self.state(),
            goals,
        }
    }

    /// A proposal through the limits: a goal being phrased, or a `motivator.suppressed` event.
    async fn propose(&mut self, myself: &ActorRef<MotivatorMsg>, p: Proposal) {
        let s = self.settings();
        let now = unix_now();
        let paused = self.paused_by(&s);
        if let Err(why) = limits::admit(&p, &self.goals, &self.evidence.counters, paused, &s, now) {
            self.args.hub.publish(Event::MotivatorSuppressed {
                trigger: p.trigger.as_str().into(),
                limit: why.limit.into(),
                reason: format!("{} — {}", p.reason, why.detail),
            });
            return;
        }
        let goal = Goal {
            id: uuid::Uuid::new_v4().simple().to_string(),
            trigger: p.trigger,
            key: p.key,
            reason: p.reason,
            evidence: p.evidence,
            persona: p.persona,
            text: String::new(),
            phrased_by: String::new(),
            priority: p.trigger.priority(&s.priority),
            status: GoalStatus::Phrasing,
            task: None,
            created_at: now,
            started_at: None,
            ended_at: None,
            outcome: None,
            tokens: 0,
        };
        self.goals.push(goal.clone());
        if self.save().is_err() {
            self.goals.retain(|g| g.id != goal.id);
            return;
        }
        self.publish_goal(&goal);
        self.phrase(myself, &goal).await;
    }

    /// The persona's answer for a goal: queued (or dropped as a duplicate).
    pub(super) fn phrased(&mut self, id: &str, reply: PhraseReply) {
        let Some(i) = self.index(id) else { return };
        if self.goals[i].status != GoalStatus::Phrasing {
            return;
        }
        let s = self.settings();
        let g = self.goals[i].clone();
        let (text, by) = match reply {
            Ok((persona, answer, tokens)) => {
                self.evidence.counters.charge(tokens, unix_now());
                self.goals[i].tokens += tokens;
                match phrase::parse(&answer, s.max_goal_bytes) {
                    Ok((text, _)) => (text, persona),
                    Err(why) => {
                        tracing::warn!(event = "motivator.phrase_unusable", goal = %id, persona = %persona, error = %why, "goal phrased from the template");
                        (
                            phrase::template(g.trigger, &g.persona, &g.reason, s.max_goal_bytes),
                            "template".into(),
                        )
                    }
                }
            }
            Err(why) => {
                tracing::warn!(event = "motivator.phrase_failed", goal = %id, error = %why, "goal phrased from the template");
                (
                    phrase::template(g.trigger, &g.persona, &g.reason, s.max_goal_bytes),
                    "template".into(),
                )
            }
        };
        if let Some(d) = limits::duplicate_of(id, &text, &self.goals, &s) {
            let detail = format!("its phrasing repeats goal {} ({})", d.id, d.status.as_str());
            self.args.hub.publish(Event::MotivatorSuppressed {
                trigger: g.trigger.as_str().into(),
                limit: "duplicate".into(),
                reason: format!("{} — {detail}", g.reason),
            });
            self.set_status(i, GoalStatus::Dropped, |g| {
                g.text = text;
                g.phrased_by = by;
                g.outcome = Some(detail);
            });
            return;
        }
        self.set_status(i, GoalStatus::Queued, |g| {
            g.text = text;
            g.phrased_by = by;
        });
    }

    /// Starts the next queued goal when no person's task is queued or running nor was for `quiet_ms`, a slot
    /// is free and budget is left.
    async fn dispatch(&mut self, myself: &ActorRef<MotivatorMsg>, s: &MotivatorSettings) {
        if self.paused_by(s).is_some() {
            return;
        }
        let people = self
            .args
            .hub
            .unfinished_tasks()
            .into_iter()
            .filter(|t| !self.evidence.own.contains(t))
            .count();
        let running = self
            .goals
            .iter()
            .filter(|g| matches!(g.status, GoalStatus::Starting | GoalStatus::Running))
            .count();
        let quiet = unix_now() - self.evidence.last_people >= s.quiet_ms as f64 / 1000.0;
        if people > 0
            || !quiet
            || running >= s.running_goals
            || self.evidence.counters.tokens_today(unix_now()) >= s.daily_tokens
        {
            return;
        }
        let Some(i) = limits::next_to_run(&self.goals) else {
            return;
        };
        self.set_status(i, GoalStatus::Starting, |g| g.started_at = Some(unix_now()));
        let g = self.goals[i].clone();
        self.start(myself, &g).await;
    }

    /// One event: a goal task's progress or end, then the evidence.
    async fn event(&mut self, myself: &ActorRef<MotivatorMsg>, seq: u64, event: &Event) {
        let now = unix_now();
        match event {
            Event::TaskSubmitted {
                id,
                goal: Some(goal),
                ..
            } => {
                if let Some(i) = self.index(goal) {
                    if matches!(
                        self.goals[i].status,
                        GoalStatus::Starting | GoalStatus::Queued
                    ) {
                        let task = id.clone();
                        self.set_status(i, GoalStatus::Running, |g| g.task = Some(task));
                    }
                }
            }
            Event::TaskStep { id, tokens, .. } if self.evidence.own.contains(id) => {
                self.evidence.counters.charge(*tokens, now);
                if let Some(g) = self
                    .goals
                    .iter_mut()
                    .find(|g| g.task.as_deref() == Some(id))
                {
                    g.tokens += tokens;
                }
                let _ = self.save();
            }
            Event::TaskDone { id, result } => self.task_ended(id, GoalStatus::Done, result),
            Event::TaskFailed { id, error } => self.task_ended(id, GoalStatus::Failed, error),
            Event::TaskCancelled { id } => self.task_ended(id, GoalStatus::Cancelled, "cancelled"),
            _ => {}
        }
        if matches!(
            event,
            Event::TaskDone { .. } | Event::TaskFailed { .. } | Event::TaskCancelled { .. }
        ) {
            self.finished_tasks += 1;
        }
        let s = self.settings();
        let before = self.evidence.counters.clone();
        let proposals = self.evidence.observe(seq, event, &s, now);
        for p in proposals {
            self.propose(myself, p).await;
        }
        if self.evidence.counters != before {
            let _ = self.save();
        }
    }

    fn task_ended(&mut self, task: &str, status: GoalStatus, outcome: &str) {
        let Some(i) = self
            .goals
            .iter()
            .position(|g| g.task.as_deref() == Some(task) && !g.status.is_final())
        else {
            return;
        };
        let outcome = batos_protocol::truncate(outcome, OUTCOME_BYTES).to_string();
        self.set_status(i, status, |g| g.outcome = Some(outcome));
    }

    /// A start job's answer.
    fn started(
        &mut self,
        id: &str,
        result: Result<(String, batos_protocol::TaskStatus), PortError>,
    ) {
        let Some(i) = self.index(id) else { return };
        match result {
            Ok((task, status)) => {
                self.evidence.own.insert(task.clone());
                if self.goals[i].status == GoalStatus::Starting {
                    self.set_status(i, GoalStatus::Running, |g| g.task = Some(task));
                }
                // Asked again after a restart, for a task that ended meanwhile: no end event will come.
                if status.is_final() {
                    self.reconciled(id, Ok(Some(status)));
                }
            }
            // The orchestrator is restarting: the goal waits for the next chance.
            Err(PortError::Unreachable(e)) if self.goals[i].status == GoalStatus::Starting => {
                tracing::warn!(event = "motivator.start_deferred", goal = %id, error = %e, "goal task not started; it waits in the queue");
                self.set_status(i, GoalStatus::Queued, |g| g.started_at = None);
            }
            Err(e) if self.goals[i].status == GoalStatus::Starting => {
                let why = format!("its task could not start: {e}");
                self.set_status(i, GoalStatus::Failed, |g| g.outcome = Some(why));
            }
            Err(_) => {}
        }
    }

    /// A reconcile job's answer for a goal found running at start.
    fn reconciled(
        &mut self,
        id: &str,
        status: Result<Option<batos_protocol::TaskStatus>, PortError>,
    ) {
        use batos_protocol::TaskStatus as T;
        let Some(i) = self.index(id) else { return };
        if self.goals[i].status != GoalStatus::Running {
            return;
        }
        let (to, why) = match status {
            Ok(Some(T::Done)) => (
                GoalStatus::Done,
                "its task finished while the motivator was away (get_task has its answer)",
            ),
            Ok(Some(T::Failed)) => (
                GoalStatus::Failed,
                "its task failed while the motivator was away (get_task says why)",
            ),
            Ok(Some(T::Cancelled)) => (GoalStatus::Cancelled, "its task was cancelled"),
            Ok(None) => (
                GoalStatus::Failed,
                "its task is no longer known to the orchestrator",
            ),
            Ok(Some(_)) | Err(_) => return,
        };
        self.set_status(i, to, |g| g.outcome = Some(why.into()));
    }

    /// Pause or resume by command.
    fn pause(&mut self, paused: bool) -> Result<MotivatorState, MotivatorError> {
        let s = self.settings();
        if !paused && s.paused {
            return Err(MotivatorError::Conflict(
                "motivator.paused = true in settings.toml keeps the motivator paused; set it to false to resume".into(),
            ));
        }
        if self.paused != paused {
            let before = self.paused;
            self.paused = paused;
            if let Err(e) = self.save() {
                self.paused = before;
                return Err(e);
            }
            self.args.hub.publish(Event::MotivatorPaused {
                paused,
                reason: "command".into(),
            });
        }
        Ok(self.state())
    }

    /// At a tick: announce a settings pause change, look for idleness, start a goal.
    async fn tick(&mut self, myself: &ActorRef<MotivatorMsg>) {
        let s = self.settings();
        if s.paused != self.settings_paused {
            self.settings_paused = s.paused;
            self.args.hub.publish(Event::MotivatorPaused {
                paused: self.paused_by(&s).is_some(),
                reason: "settings".into(),
            });
        }
        let unfinished = self.args.hub.unfinished_tasks().len();
        if let Some(p) = self.evidence.idle(unfinished, &s, unix_now()) {
            self.propose(myself, p).await;
        }
        self.dispatch(myself, &s).await;
    }
}

impl Actor for MotivatorActor {
    type Msg = MotivatorMsg;
    type State = Mind;
    type Arguments = MotivatorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MotivatorMsg>,
        args: MotivatorArgs,
    ) -> Result<Mind, ActorProcessingErr> {
        let (store, saved) = GoalStore::open(&args.dir)?;
        let mut evidence = Evidence::new(saved.counters, unix_now());
        evidence.own = saved
            .goals
            .iter()
            .filter_map(|g| g.task.clone())
            .collect::<HashSet<_>>();
        let jobs = Jobs::new(format!("root/{MOTIVATOR_NAME}"), args.hub.clone());
        let settings_paused = args.settings.load().motivator.paused;
        let mut mind = Mind {
            args,
            store,
            paused: saved.paused,
            settings_paused,
            goals: saved.goals,
            evidence,
            jobs,
            finished_tasks: 0,
        };
        mind.start_jobs(&myself).await?;
        // Goals the previous life left mid-way.
        let open: Vec<Goal> = mind
            .goals
            .iter()
            .filter(|g| !g.status.is_final())
            .cloned()
            .collect();
        for g in &open {
            match g.status {
                GoalStatus::Phrasing => mind.phrase(&myself, g).await,
                GoalStatus::Starting => mind.start(&myself, g).await,
                GoalStatus::Running => mind.reconcile(&myself, g).await,
                _ => {}
            }
        }
        tracing::info!(
            event = "motivator.loaded",
            goals = mind.goals.len(),
            open = open.len(),
            paused = mind.paused,
            "goals loaded"
        );
        Ok(mind)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<MotivatorMsg>,
        event: SupervisionEvent,
        state: &mut Mind,
    ) -> Result<(), ActorProcessingErr> {
        let Some((label, end)) = state.jobs.supervise(&event) else {
            return Ok(());
        };
        match (label, end) {
            // Without its eyes or its clock the Motivator is blind: restart it whole.
            (job @ (MotivatorJob::Forward | MotivatorJob::Tick), _) => {
                return Err(format!("the motivator's {job} job ended").into())
            }
            (MotivatorJob::Phrase(id), JobEnd::Failed(why)) => state.phrased(&id, Err(why)),
            (MotivatorJob::Start(id), JobEnd::Failed(why)) => state.started(
                &id,
                Err(PortError::Refused(format!("the start job failed: {why}"))),
            ),
            _ => {}
        }
        let _ = myself;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<MotivatorMsg>,
        msg: MotivatorMsg,
        state: &mut Mind,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MotivatorMsg::Event(p) => state.event(&myself, p.seq, &p.event).await,
            MotivatorMsg::Tick => state.tick(&myself).await,
            MotivatorMsg::Phrased(id, reply) => {
                state.phrased(&id, reply);
                let s = state.settings();
                state.dispatch(&myself, &s).await;
            }
            MotivatorMsg::Started(id, result) => state.started(&id, result),
            MotivatorMsg::Reconciled(id, status) => state.reconciled(&id, status),
            MotivatorMsg::State(reply) => {
                let _ = reply.send(state.state());
            }
            MotivatorMsg::Goals(reply) => {
                let _ = reply.send(state.list());
            }
            MotivatorMsg::Pause(paused, reply) => {
                let _ = reply.send(state.pause(paused));
            }
            MotivatorMsg::Crash => panic!("debug_crash requested for motivator"),
        }
        Ok(())
    }
}
