//! The Curator actor: owns the dataset files and their index (decided keys, kept keys, the dedupe index),
//! the queue of exchanges waiting for a decision, and at most one judge job.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde::{Deserialize, Serialize};

use super::dataset::{
    append_line, read_lines, repair, rewrite, Decision, Example, JudgeVerdict, Lineage, Rating,
    Split,
};
use super::dedupe::{
    content_hash, normalise, percentile, DedupeIndex, NearParams, Prepared, Verdict,
};
use super::messages::{CuratorArgs, CuratorMsg, JudgeReply};
use super::screen::{candidates, screen, Candidate, Reason, Screened};
use super::{judge, CuratorError, CuratorStats, Export, JudgeAgreement, PersonaStats, RateOutcome};
use crate::events::{unix_now, Event};
use crate::job::{JobEnd, Jobs};
use crate::llm::{ChatMessage, Role};
use crate::ports::TaskState;
use crate::ports::ThinkRequest;
use crate::settings::CuratorSettings;

mod agreement;
mod decide;
mod judging;
mod rating;
mod sets;

use sets::{params, PersonaSet, TriggerState};

/// Global name of the Curator actor.
pub const CURATOR_NAME: &str = "curator";

/// The outcome code of a kept example in `decisions.jsonl`.
const ACCEPTED: &str = "accepted";

/// The Curator organ.
#[derive(Debug, Default, Clone, Copy)]
pub struct CuratorActor;

/// The Curator's state.
pub struct CuratorState {
    args: CuratorArgs,
    sets: BTreeMap<String, PersonaSet>,
    ratings: HashMap<String, Rating>,
    triggers: BTreeMap<String, TriggerState>,
    queue: VecDeque<Candidate>,
    queued: HashSet<String>,
    remaining: HashMap<String, usize>,
    judging: Option<(Candidate, Prepared, Vec<&'static str>)>,
    agreement: Option<JudgeAgreement>,
    jobs: Jobs<CuratorJob>,
    /// Training requests recorded (the trigger is durable) and not yet handed to the trainer: started as jobs
    /// when the message that crossed the threshold has been handled ([`CuratorActor::handle`]).
    handovers: Vec<Handover>,
}

/// The Curator's jobs, as its supervision reads them when they end.
#[derive(Debug, Clone, PartialEq)]
enum CuratorJob {
    /// `judge/<exchange key>`: the judge scores one candidate.
    Judge(String),
    /// `trigger/<persona>`: a dataset handed to the trainer.
    Trigger(String),
}

impl std::fmt::Display for CuratorJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CuratorJob::Judge(key) => write!(f, "judge/{key}"),
            CuratorJob::Trigger(persona) => write!(f, "trigger/{persona}"),
        }
    }
}

/// A persona's dataset to hand to the trainer: the trigger it answers is already recorded.
struct Handover {
    trainer: std::sync::Arc<dyn crate::ports::TrainerHook>,
    persona: String,
    export: Export,
    new_examples: usize,
    train: usize,
}

fn io_err(what: &str, e: impl std::fmt::Display) -> CuratorError {
    CuratorError::Store(format!("{what}: {e}"))
}

/// Task ids name inbox files: only the daemon's own 32-hex-char form is accepted.
fn valid_task_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_hexdigit())
}

impl CuratorState {
    fn settings(&self) -> CuratorSettings {
        self.args.settings.load().curator.clone()
    }

    fn inbox(&self) -> PathBuf {
        self.args.dir.join("inbox")
    }

    fn triggers_path(&self) -> PathBuf {
        self.args.dir.join("triggers.json")
    }

    fn ratings_path(&self) -> PathBuf {
        self.args.dir.join("ratings.jsonl")
    }

    fn set(&mut self, persona: &str) -> Result<&mut PersonaSet, CuratorError> {
        if !self.sets.contains_key(persona) {
            let dir = self.args.dir.join(persona);
            let set = PersonaSet::load(dir, params(&self.settings()))
                .map_err(|e| io_err(&format!("cannot read {persona}'s dataset"), e))?;
            self.sets.insert(persona.to_string(), set);
        }
        self.sets
            .get_mut(persona)
            .ok_or_else(|| CuratorError::Store(format!("no dataset for {persona}")))
    }

    fn decided(&self, c: &Candidate) -> bool {
        self.sets
            .get(&c.persona)
            .is_some_and(|s| s.outcomes.contains_key(&c.key))
    }

    /// Queues a task's undecided exchanges; returns how many.
    fn enqueue(&mut self, task: &TaskState) -> usize {
        let nodes = self.settings().nodes;
        let mut n = 0;
        for c in candidates(task, &nodes) {
            if self.decided(&c) || self.queued.contains(&c.key) {
                continue;
            }
            self.queued.insert(c.key.clone());
            self.queue.push_back(c);
            n += 1;
        }
        if n > 0 {
            *self.remaining.entry(task.id.clone()).or_default() += n;
        }
        n
    }

    /// One exchange of `task` is decided; the inbox file goes with the last one.
    fn done_one(&mut self, c: &Candidate) {
        self.queued.remove(&c.key);
        let left = match self.remaining.get_mut(&c.task.id) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        if left == 0 {
            self.remaining.remove(&c.task.id);
            let path = self.inbox().join(format!("{}.json", c.task.id));
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(event = "curator.inbox_remove_failed", task = %c.task.id, error = %e, "inbox file not removed; its exchanges are decided and are skipped at the next start");
                }
            }
        }
    }

    fn maybe_trigger(&mut self, persona: &str) -> Result<(), CuratorError> {
        let min_new = self.settings().min_new_examples;
        let train = self.set(persona)?.count(Split::Train);
        let st = self.triggers.get(persona).cloned().unwrap_or_default();
        if train < st.train_at_last + min_new {
            return Ok(());
        }
        let next = TriggerState {
            train_at_last: train,
            count: st.count + 1,
            last_at: Some(unix_now()),
        };
        self.triggers.insert(persona.to_string(), next);
        // Durable before it is announced: a crash after this point never fires the same crossing twice.
        let bytes = serde_json::to_vec_pretty(&self.triggers).map_err(|e| io_err("triggers", e))?;
        crate::fsutil::atomic_write(&self.triggers_path(), &bytes)
            .map_err(|e| io_err("triggers.json", e))?;
        let new_examples = train - st.train_at_last;
        let export = self.export(persona)?;
        match self.args.trainer.clone() {
            None => {
                self.args.hub.publish(Event::CuratorTrigger {
                    persona: persona.to_string(),
                    new_examples,
                    train,
                    delivered: false,
                    note: "no trainer is running; the dataset waits for one".into(),
                });
            }
            Some(trainer) => self.handovers.push(Handover {
                trainer,
                persona: persona.to_string(),
                export,
                new_examples,
                train,
            }),
        };
        Ok(())
    }

    /// Starts a job per pending hand-over (`trigger/<persona>`): the trainer queues the persona or declines,
    /// and `curator.trigger` says which. A job, not a detached task, so a hand-over that panics is an
    /// `actor.failed` event and dies with the Curator.
    async fn hand_over(&mut self, myself: &ActorRef<CuratorMsg>) {
        for h in std::mem::take(&mut self.handovers) {
            let hub = self.args.hub.clone();
            let label = CuratorJob::Trigger(h.persona.clone());
            let work = async move {
                let (delivered, note) = match h.trainer.train(&h.persona, &h.export).await {
                    Ok(note) => (true, note),
                    Err(why) => (false, why),
                };
                hub.publish(Event::CuratorTrigger {
                    persona: h.persona,
                    new_examples: h.new_examples,
                    train: h.train,
                    delivered,
                    note,
                });
            };
            if let Err(e) = self.jobs.spawn(&myself.get_cell(), label, work).await {
                tracing::warn!(event = "curator.handover_not_started", error = %e, "the training request was not handed over; the next threshold crossing asks again");
            }
        }
    }

    fn export(&mut self, persona: &str) -> Result<Export, CuratorError> {
        if !crate::PERSONAS.contains(&persona) {
            return Err(CuratorError::Invalid(format!(
                "unknown persona `{}`; expected ALFRED, BABS, BRICK or ROBIN",
                batos_protocol::truncate(persona, 64)
            )));
        }
        let set = self.set(persona)?;
        Ok(Export {
            persona: persona.to_string(),
            train: set.file(Split::Train),
            heldout: set.file(Split::Heldout),
            decisions: set.decisions(),
            train_examples: set.count(Split::Train),
            heldout_examples: set.count(Split::Heldout),
        })
    }

    fn stats(&self) -> CuratorStats {
        let personas: BTreeMap<String, PersonaStats> = self
            .sets
            .iter()
            .map(|(name, set)| {
                let mut st = PersonaStats {
                    seen: set.outcomes.len(),
                    train: set.count(Split::Train),
                    heldout: set.count(Split::Heldout),
                    ..Default::default()
                };
                for o in set.outcomes.values() {
                    if o == ACCEPTED {
                        st.accepted += 1;
                    } else {
                        *st.rejected.entry(o.clone()).or_default() += 1;
                    }
                }
                if let Some(t) = self.triggers.get(name) {
                    st.new_since_trigger = st.train.saturating_sub(t.train_at_last);
                    st.triggers = t.count;
                    st.last_trigger = t.last_at;
                } else {
                    st.new_since_trigger = st.train;
                }
                (name.clone(), st)
            })
            .collect();
        let (seen, kept) = personas.values().fold((0, 0), |(s, k), p: &PersonaStats| {
            (s + p.seen, k + p.accepted)
        });
        CuratorStats {
            personas,
            queued: self.queue.len() + usize::from(self.judging.is_some()),
            judging: self.judging.is_some(),
            accept_rate: (seen > 0).then(|| kept as f64 / seen as f64),
            judge_agreement: self.agreement.clone(),
        }
    }

    /// Decides queued exchanges until one needs the judge (then starts its job) or the queue is empty.
    async fn pump(&mut self, myself: &ActorRef<CuratorMsg>) -> Result<(), CuratorError> {
        while self.judging.is_none() {
            let Some(c) = self.queue.pop_front() else {
                return Ok(());
            };
            if self.decided(&c) {
                self.done_one(&c);
                continue;
            }
            let s = self.settings();
            let rating = self.ratings.get(&c.task.id).cloned();
            let screened = match self.set(&c.persona) {
                Ok(set) => screen(&c, &s, rating.as_ref(), &set.index),
                Err(e) => {
                    self.queue.push_front(c);
                    return Err(e);
                }
            };
            let result = match screened {
                Screened::Reject(r, detail, passed) => self.reject(&c, r, detail, &passed, None),
                Screened::Admit(p, passed) => self.accept(&c, p, &passed, None),
                Screened::Judge(p, passed) => {
                    if let Err(e) = self.start_judge(myself, &s, &c).await {
                        self.queue.push_front(c);
                        return Err(e);
                    }
                    self.judging = Some((c, p, passed));
                    return Ok(());
                }
            };
            if let Err(e) = result {
                // Put it back: the next pump (after a restart, from the inbox) decides it again.
                self.queue.push_front(c);
                return Err(e);
            }
        }
        Ok(())
    }

    /// A write failed: say so, and try again after a pause.
    fn retry_later(&self, myself: &ActorRef<CuratorMsg>, e: &CuratorError) {
        let wait = Duration::from_millis(self.args.settings.load().curator.write_retry_ms);
        tracing::error!(event = "curator.write_failed", error = %e, retry_ms = wait.as_millis() as u64, "curation paused");
        myself.send_after(wait, || CuratorMsg::Pump);
    }
}

fn read_inbox(dir: &Path) -> Vec<TaskState> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut tasks = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<TaskState>(&b).map_err(|e| e.to_string()))
        {
            Ok(t) => tasks.push(t),
            Err(why) => {
                tracing::warn!(event = "curator.inbox_unreadable", file = %path.display(), error = %why, "inbox file skipped")
            }
        }
    }
    tasks.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
    tasks
}

impl Actor for CuratorActor {
    type Msg = CuratorMsg;
    type State = CuratorState;
    type Arguments = CuratorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<CuratorMsg>,
        args: CuratorArgs,
    ) -> Result<CuratorState, ActorProcessingErr> {
        std::fs::create_dir_all(args.dir.join("inbox"))?;
        for d in [args.dir.clone(), args.dir.join("inbox")] {
            crate::fsutil::clean_stale_temps(&d);
        }
        let jobs = Jobs::new("root/curator", args.hub.clone());
        let mut state = CuratorState {
            args,
            sets: BTreeMap::new(),
            ratings: HashMap::new(),
            triggers: BTreeMap::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            remaining: HashMap::new(),
            judging: None,
            agreement: None,
            jobs,
            handovers: Vec::new(),
        };
        for p in crate::PERSONAS {
            crate::fsutil::clean_stale_temps(&state.args.dir.join(p));
            state.set(p)?;
        }
        repair(&state.ratings_path())?;
        let (ratings, _) = read_lines::<Rating>(&state.ratings_path())?;
        for r in ratings {
            state.ratings.insert(r.task.clone(), r);
        }
        if let Ok(bytes) = std::fs::read(state.triggers_path()) {
            state.triggers = serde_json::from_slice(&bytes)?;
        }
        state.load_agreement();
        let rated: Vec<String> = state.ratings.keys().cloned().collect();
        for task in rated {
            state.apply_rating(&task)?;
        }
        let inbox = state.inbox();
        for task in read_inbox(&inbox) {
            if state.enqueue(&task) == 0 {
                let _ = std::fs::remove_file(inbox.join(format!("{}.json", task.id)));
            }
        }
        myself.cast(CuratorMsg::Pump)?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<CuratorMsg>,
        msg: CuratorMsg,
        state: &mut CuratorState,
    ) -> Result<(), ActorProcessingErr> {
        let handled = Self::handle_msg(&myself, msg, state).await;
        // Whatever the message was and however it ended, a threshold it crossed is handed over now.
        state.hand_over(&myself).await;
        handled
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<CuratorMsg>,
        event: SupervisionEvent,
        state: &mut CuratorState,
    ) -> Result<(), ActorProcessingErr> {
        match state.jobs.supervise(&event) {
            Some((CuratorJob::Judge(key), JobEnd::Failed(why)))
                if state.judging.as_ref().is_some_and(|(c, _, _)| c.key == key) =>
            {
                let reply: JudgeReply = Err(format!("the judge job failed: {why}"));
                if let Err(e) = state.judged(&key, reply) {
                    state.retry_later(&myself, &e);
                    return Ok(());
                }
                myself.cast(CuratorMsg::Pump)?;
            }
            Some((CuratorJob::Trigger(persona), JobEnd::Failed(why))) => {
                tracing::warn!(event = "curator.handover_failed", persona = %persona, error = %why, "the training request was not handed over; the next threshold crossing asks again");
            }
            _ => {}
        }
        Ok(())
    }
}

impl CuratorActor {
    /// One message, as [`Actor::handle`] hands it over.
    async fn handle_msg(
        myself: &ActorRef<CuratorMsg>,
        msg: CuratorMsg,
        state: &mut CuratorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CuratorMsg::Curate(task, reply) => {
                if !valid_task_id(&task.id) {
                    let _ = reply.send(Err(CuratorError::Invalid(format!(
                        "`{}` is not a task id",
                        batos_protocol::truncate(&task.id, 64)
                    ))));
                    return Ok(());
                }
                let before = state.queue.len();
                let n = state.enqueue(&task);
                if n == 0 {
                    let _ = reply.send(Ok(()));
                    return Ok(());
                }
                let path = state.inbox().join(format!("{}.json", task.id));
                let written = serde_json::to_vec(&*task)
                    .map_err(|e| e.to_string())
                    .and_then(|b| {
                        crate::fsutil::atomic_write(&path, &b).map_err(|e| e.to_string())
                    });
                if let Err(e) = written {
                    // Not held: take it back out, and let the orchestrator hand it over again later.
                    for c in state.queue.drain(before..) {
                        state.queued.remove(&c.key);
                    }
                    state.remaining.remove(&task.id);
                    let _ = reply.send(Err(io_err("cannot write the inbox", e)));
                    return Ok(());
                }
                let _ = reply.send(Ok(()));
                myself.cast(CuratorMsg::Pump)?;
            }
            CuratorMsg::Rate {
                task,
                score,
                comment,
                reply,
            } => {
                let _ = reply.send(state.rate(task, score, comment));
            }
            CuratorMsg::Stats(reply) => {
                let _ = reply.send(state.stats());
            }
            CuratorMsg::Agreement(a, reply) => {
                let _ = reply.send(state.record_agreement(a));
            }
            CuratorMsg::Export(persona, reply) => {
                let _ = reply.send(state.export(&persona));
            }
            CuratorMsg::Pump => {
                if let Err(e) = state.pump(myself).await {
                    state.retry_later(myself, &e);
                }
            }
            CuratorMsg::Judged(key, reply) => {
                if let Err(e) = state.judged(&key, reply) {
                    state.retry_later(myself, &e);
                    return Ok(());
                }
                myself.cast(CuratorMsg::Pump)?;
            }
            CuratorMsg::Crash => panic!("debug_crash requested for the curator"),
        }
        Ok(())
    }
}
