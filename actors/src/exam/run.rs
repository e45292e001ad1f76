//! One exam run's work, as a job of the exam organ: teach, then ask every question of the society (and of
//! the bare model, and the judge), saving the result after every step; then score and announce.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use batos_protocol::exam::{
    ExamAnswer, ExamQuestion, ExamResult, ExamStatus, JudgeVerdict, QuestionResult, TeachRecord,
};
use batos_protocol::{truncate, TaskStatus};
use ractor::ActorRef;

use super::check::{leaks, Grader};
use super::store::ResultStore;
use super::ExamArgs;
use super::ExamMsg;
use crate::curator::{judge, JudgeAgreement};
use crate::events::{unix_now, Event};
use crate::llm::{BackendKind, ChatMessage, ChatRequest, Role};
use crate::personas::ThinkRequest;
use crate::ports::{ExamOrigin, PortError, TaskState};

/// Bytes of an error kept in a result.
const ERROR_BYTES: usize = 500;

/// The task of the run that is in flight, so a cancel can cancel it too.
pub(super) type InFlight = Arc<Mutex<Option<String>>>;

/// What a run works with.
pub(super) struct RunCtx {
    pub args: ExamArgs,
    pub store: ResultStore,
    /// One per question of the result, in its order.
    pub graders: Vec<Grader>,
    pub in_flight: InFlight,
}

impl RunCtx {
    fn exam(&self) -> crate::settings::ExamSettings {
        self.args.settings.load().exam.clone()
    }

    fn set_in_flight(&self, task: Option<String>) {
        *self.in_flight.lock().unwrap_or_else(|p| p.into_inner()) = task;
    }

    /// Polls task `id` until [`settled`] says so or `timeout` passes. An orchestrator that does not answer
    /// (restarting) is waited for; one that forgot the task is an error.
    async fn wait(
        &self,
        id: &str,
        timeout: Duration,
        past_done: bool,
        done: impl Fn(&TaskState) -> bool,
    ) -> Result<TaskState, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let poll = Duration::from_millis(self.exam().poll_ms);
            match self.args.tasks.get(id.to_string()).await {
                Ok(Some(t)) if settled(&t, past_done, &done) => return Ok(t),
                Ok(Some(_)) | Err(PortError::Unreachable(_)) => {}
                Ok(None) => return Err(format!("the orchestrator no longer knows task {id}")),
                Err(PortError::Refused(e)) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(format!("no answer within {} ms", timeout.as_millis()));
            }
            tokio::time::sleep(poll).await;
        }
    }

    fn save(&self, r: &ExamResult) -> Result<(), String> {
        self.store
            .save(r)
            .map_err(|e| format!("the result file cannot be written: {e}"))
    }
}

/// Whether a wait on `t` is over: `done` holds of it, or — unless `past_done` — it ended or paused. With
/// `past_done` a done task is waited on further (for its hand-over to memory, which follows the answer),
/// while a failed, cancelled or paused one is not.
pub(super) fn settled(t: &TaskState, past_done: bool, done: impl Fn(&TaskState) -> bool) -> bool {
    if done(t) {
        return true;
    }
    if past_done && t.status == TaskStatus::Done {
        return false;
    }
    t.status.is_final() || t.status == TaskStatus::Paused
}

/// Runs (or resumes) `result` to its end and reports to the organ.
pub(super) async fn run(ctx: RunCtx, mut result: ExamResult, me: ActorRef<ExamMsg>) {
    let outcome = steps(&ctx, &mut result).await;
    finish(&ctx, &mut result, outcome.err(), ExamStatus::Done).await;
    let _ = me.cast(ExamMsg::Ended(result.summary.id.clone()));
}

/// Ends a run: status, end time, figures, the file, `exam.scored`, the judge's agreement, old results pruned.
pub(super) async fn finish(
    ctx: &RunCtx,
    result: &mut ExamResult,
    error: Option<String>,
    status: ExamStatus,
) {
    result.summary.status = if error.is_some() {
        ExamStatus::Failed
    } else {
        status
    }
    .as_str()
    .into();
    result.error = error;
    result.summary.finished_at = Some(unix_now());
    result.rescore();
    if let Err(e) = ctx.save(result) {
        tracing::error!(event = "exam.save_failed", exam = %result.summary.id, error = %e, "the exam's end is not on disk");
    }
    tracing::info!(event = "exam.scored", exam = %result.summary.id, status = %result.summary.status, society_pct = result.summary.society_pct, bare_pct = ?result.summary.bare_pct, done = result.summary.done, "exam scored");
    ctx.args.hub.publish(Event::ExamScored {
        summary: result.summary.clone(),
    });
    if let (Some(curator), true) = (&ctx.args.curator, result.summary.judged > 0) {
        let mut a = JudgeAgreement {
            exam: result.summary.id.clone(),
            at: unix_now(),
            ..Default::default()
        };
        for r in &result.results {
            if let Some(j) = &r.judge {
                a.judged += 1;
                a.agreed += u32::from(j.agrees);
                a.refused_right += u32::from(r.society.pass && !j.keep);
                a.kept_wrong += u32::from(!r.society.pass && j.keep);
            }
        }
        if let Err(e) = curator.record_agreement(a).await {
            tracing::warn!(event = "exam.agreement_not_recorded", exam = %result.summary.id, error = %e, "the judge's agreement was not handed to the Curator");
        }
    }
    ctx.store.prune(ctx.exam().keep_results);
}

/// `Err` (the reason, for the result) once the run is older than `exam.max_run_ms`, counted from its start so
/// a restart does not reset it.
fn past_time(ctx: &RunCtx, result: &ExamResult) -> Result<(), String> {
    let max = ctx.exam().max_run_ms;
    let ran_ms = ((unix_now() - result.summary.started_at).max(0.0) * 1000.0) as u64;
    if ran_ms < max {
        return Ok(());
    }
    tracing::warn!(event = "exam.time_spent", exam = %result.summary.id, ran_ms, max_run_ms = max, "the exam ran past its time bound");
    Err(format!(
        "the run took {ran_ms} ms, past exam.max_run_ms ({max} ms); {} of {} questions answered",
        result.results.len(),
        result.questions.len()
    ))
}

async fn steps(ctx: &RunCtx, result: &mut ExamResult) -> Result<(), String> {
    let id = result.summary.id.clone();
    let teach: Vec<ExamQuestion> = result
        .questions
        .iter()
        .filter(|q| q.teach.is_some())
        .cloned()
        .collect();
    for (i, q) in teach.iter().enumerate() {
        if result.taught.iter().any(|t| t.question == q.id) {
            continue;
        }
        past_time(ctx, result)?;
        let started = Instant::now();
        let record = teach_one(ctx, &id, q).await;
        ctx.args.hub.publish(Event::ExamProgress {
            exam: id.clone(),
            phase: "teach".into(),
            done: i as u32 + 1,
            total: teach.len() as u32,
            question: q.id.clone(),
            category: q.category.clone(),
            pass: record.remembered,
            bare_pass: None,
            ms: started.elapsed().as_millis() as u64,
        });
        result.taught.push(record);
        ctx.save(result)?;
    }
    let total = result.questions.len() as u32;
    for i in 0..result.questions.len() {
        let q = result.questions[i].clone();
        if result.results.iter().any(|r| r.id == q.id) {
            continue;
        }
        past_time(ctx, result)?;
        let grader = &ctx.graders[i];
        let society = society(ctx, &id, &q, grader).await;
        let bare = if result.summary.baseline {
            Some(bare(ctx, &q, grader).await)
        } else {
            None
        };
        let judge = if result.judge && society.error.is_none() {
            judge_answer(ctx, &q, &society).await
        } else {
            None
        };
        ctx.args.hub.publish(Event::ExamProgress {
            exam: id.clone(),
            phase: "question".into(),
            done: result.results.len() as u32 + 1,
            total,
            question: q.id.clone(),
            category: q.category.clone(),
            pass: society.pass,
            bare_pass: bare.as_ref().map(|b| b.pass),
            ms: society.ms,
        });
        result.results.push(QuestionResult {
            id: q.id.clone(),
            category: q.category.clone(),
            question: q.question.clone(),
            society,
            bare,
            judge,
        });
        result.rescore();
        ctx.save(result)?;
    }
    Ok(())
}

/// Teaches `q`'s fact as a person's task and waits until memory holds it.
async fn teach_one(ctx: &RunCtx, exam: &str, q: &ExamQuestion) -> TeachRecord {
    let mut record = TeachRecord {
        question: q.id.clone(),
        task: None,
        remembered: false,
        error: None,
    };
    let origin = ExamOrigin {
        exam: exam.to_string(),
        question: q.id.clone(),
        teach: true,
    };
    let text = q.teach.clone().unwrap_or_default();
    let task = match ctx.args.tasks.submit(text, origin).await {
        Ok(t) => t,
        Err(e) => {
            record.error = Some(truncate(&e.to_string(), ERROR_BYTES).to_string());
            return record;
        }
    };
    record.task = Some(task.clone());
    ctx.set_in_flight(Some(task.clone()));
    let s = ctx.exam();
    let done = ctx
        .wait(
            &task,
            Duration::from_millis(s.teach_timeout_ms),
            false,
            |_| false,
        )
        .await;
    let outcome = match done {
        Ok(t) if t.status == TaskStatus::Done && ctx.args.memory.is_none() => Ok(t),
        Ok(t) if t.status == TaskStatus::Done => {
            ctx.wait(
                &task,
                Duration::from_millis(s.remember_timeout_ms),
                true,
                |t| t.remembered,
            )
            .await
        }
        other => other,
    };
    ctx.set_in_flight(None);
    match outcome {
        Ok(t) if t.remembered => record.remembered = true,
        Ok(t) if t.status == TaskStatus::Done => {
            record.error = Some(if ctx.args.memory.is_none() {
                "no memory to store it in".into()
            } else {
                format!(
                    "done, but not stored in memory within {} ms",
                    s.remember_timeout_ms
                )
            })
        }
        Ok(t) => {
            let _ = ctx.args.tasks.cancel(task).await;
            record.error = Some(task_error(&t));
        }
        Err(e) => {
            let _ = ctx.args.tasks.cancel(task).await;
            record.error = Some(e);
        }
    }
    record
}

fn task_error(t: &TaskState) -> String {
    let why = match t.status {
        TaskStatus::Paused => format!(
            "paused for a human: {}",
            t.inquiry
                .as_ref()
                .map(|i| i.reason.as_str())
                .unwrap_or_default()
        ),
        TaskStatus::Failed => format!("failed: {}", t.error.as_deref().unwrap_or_default()),
        other => format!("ended {}", other.as_str()),
    };
    truncate(&why, ERROR_BYTES).to_string()
}

/// Asks the society: one task through the graph.
async fn society(ctx: &RunCtx, exam: &str, q: &ExamQuestion, grader: &Grader) -> ExamAnswer {
    let started = Instant::now();
    let origin = ExamOrigin {
        exam: exam.to_string(),
        question: q.id.clone(),
        teach: false,
    };
    let mut a = ExamAnswer::default();
    let task = match ctx.args.tasks.submit(q.question.clone(), origin).await {
        Ok(t) => t,
        Err(e) => {
            a.error = Some(truncate(&e.to_string(), ERROR_BYTES).to_string());
            a.why = "no task".into();
            return a;
        }
    };
    a.task = Some(task.clone());
    ctx.set_in_flight(Some(task.clone()));
    let timeout = Duration::from_millis(ctx.exam().question_timeout_ms);
    let waited = ctx.wait(&task, timeout, false, |_| false).await;
    ctx.set_in_flight(None);
    a.ms = started.elapsed().as_millis() as u64;
    match waited {
        Ok(t) => {
            a.steps = t.steps.len() as u32;
            for s in t.steps.iter().filter(|s| !s.model.is_empty()) {
                let m = format!("{}={}", s.persona, s.model);
                if !a.models.contains(&m) {
                    a.models.push(m);
                }
            }
            a.tools = t
                .tools_used
                .iter()
                .map(|u| format!("{}{}", u.name, if u.ok { "" } else { "!" }))
                .collect();
            if t.status == TaskStatus::Done {
                a.answer = t.result.clone().unwrap_or_default();
            } else {
                let _ = ctx.args.tasks.cancel(task).await;
                a.error = Some(task_error(&t));
            }
        }
        Err(e) => {
            let _ = ctx.args.tasks.cancel(task).await;
            a.error = Some(e);
        }
    }
    (a.pass, a.why) = grader.grade(&a.answer);
    if a.error.is_some() && a.answer.is_empty() {
        a.why = "no answer".into();
    }
    a.leaks = leaks(q, &a.answer);
    a
}

/// The model the bare baseline asks: the embedded base model, or (on Ollama) the bare persona's model as
/// settings.toml names it.
fn bare_model(ctx: &RunCtx) -> String {
    let s = ctx.args.settings.load();
    match ctx.args.backend.kind() {
        BackendKind::Embedded => s.llm.embedded.model_name.clone(),
        BackendKind::Ollama => s
            .personas
            .get(&s.exam.bare_persona)
            .map(|p| p.model.clone())
            .unwrap_or_default(),
    }
}

/// Asks the bare model: the question alone as the one user turn, its own chat template, no system prompt,
/// the bare persona's sampling.
async fn bare(ctx: &RunCtx, q: &ExamQuestion, grader: &Grader) -> ExamAnswer {
    let s = ctx.exam();
    let model = bare_model(ctx);
    let req = ChatRequest {
        model: model.clone(),
        messages: vec![ChatMessage::new(Role::User, q.question.clone())],
        tools: Vec::new(),
        format: None,
        sampling: ctx.args.personas.sampling(&s.bare_persona),
    };
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_millis(s.question_timeout_ms),
        ctx.args.backend.chat(req, None),
    )
    .await;
    let mut a = ExamAnswer {
        ms: started.elapsed().as_millis() as u64,
        models: vec![format!("bare={model}")],
        ..Default::default()
    };
    match r {
        Ok(Ok(resp)) => a.answer = resp.content,
        Ok(Err(e)) => a.error = Some(truncate(&e.to_string(), ERROR_BYTES).to_string()),
        Err(_) => a.error = Some(format!("no answer within {} ms", s.question_timeout_ms)),
    }
    (a.pass, a.why) = grader.grade(&a.answer);
    a.leaks = leaks(q, &a.answer);
    a
}

/// The Curator's judge on the society's answer, against the exam's verdict.
async fn judge_answer(ctx: &RunCtx, q: &ExamQuestion, a: &ExamAnswer) -> Option<JudgeVerdict> {
    let c = ctx.args.settings.load().curator.clone();
    let prompt = judge::prompt(
        "ALFRED",
        "synthesize",
        &q.question,
        &a.answer,
        c.judge_max_bytes,
    );
    let req = ThinkRequest {
        messages: vec![ChatMessage::new(Role::User, prompt)],
        tools: Vec::new(),
        format: Some(judge::schema()),
        tokens: None,
        sample: 0,
    };
    let score = match ctx.args.personas.think(&c.judge, req).await {
        Ok(t) => judge::parse(&t.response.content).ok().map(|p| p.score),
        Err(e) => {
            tracing::warn!(event = "exam.judge_failed", question = %q.id, error = %e, "the judge gave no verdict");
            return None;
        }
    };
    let keep = score.is_some_and(|s| s >= c.min_score);
    Some(JudgeVerdict {
        score,
        keep,
        agrees: keep == a.pass,
    })
}
