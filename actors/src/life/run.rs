//! One life's work, as a job of the life organ: switch, examine, feed the curriculum with checks between,
//! examine again, put the switches back. The record is saved after every step, so a kill resumes it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use batos_protocol::exam::{parse_set, CategoryScore, ExamQuestion, ExamResult, ExamRunArgs};
use batos_protocol::life::{LifeExamPoint, LifeRecord, LifeRollback, LifeStatus, LoopActivity};
use batos_protocol::Event;
use ractor::ActorRef;

use super::ctx::{Meter, RunCtx};
use super::switches;
use super::LifeMsg;
use crate::ask::OrganError;
use crate::events::unix_now;

/// How long a switch may take to be read back by the daemon's settings reload.
const SWITCH_WAIT: Duration = Duration::from_secs(60);

/// The held-out subset: `n` questions drawn from each category in proportion to its size (stratified, so the
/// subset's share right estimates the whole set's), every category asked at least once while `n` allows, each
/// category's picks spread over its questions; in set order; all of them when `n` is 0 or larger.
///
/// Proportional, not round robin: the life's exam has 15 recall questions of 43, the category a life changes
/// most; round robin gave it 4 of 24 checks (17 %), so the checks moved a quarter as much as the full set
/// (BENCHMARKS.md "Learning curve", first lives: +6.3 against +29.1).
pub fn check_ids(questions: &[ExamQuestion], n: usize) -> Vec<String> {
    if n == 0 || n >= questions.len() {
        return questions.iter().map(|q| q.id.clone()).collect();
    }
    let mut cats: Vec<&str> = Vec::new();
    for q in questions {
        if !cats.contains(&q.category.as_str()) {
            cats.push(&q.category);
        }
    }
    let per: Vec<Vec<&ExamQuestion>> = cats
        .iter()
        .map(|c| questions.iter().filter(|q| q.category == *c).collect())
        .collect();
    // One each while n allows (set order), then each next pick to the category furthest below its
    // proportional share (largest remainder; ties to the earlier category).
    let share = |qs: &Vec<&ExamQuestion>| n as f64 * qs.len() as f64 / questions.len() as f64;
    let mut quota: Vec<usize> = (0..per.len()).map(|i| usize::from(i < n)).collect();
    let mut left = n - quota.iter().sum::<usize>();
    while left > 0 {
        let next = (0..per.len())
            .filter(|&i| quota[i] < per[i].len())
            .max_by(|&a, &b| {
                let (da, db) = (
                    share(&per[a]) - quota[a] as f64,
                    share(&per[b]) - quota[b] as f64,
                );
                da.total_cmp(&db).then(b.cmp(&a))
            });
        let Some(i) = next else { break };
        quota[i] += 1;
        left -= 1;
    }
    let mut chosen = BTreeSet::new();
    for (qs, q) in per.iter().zip(quota) {
        for i in 0..q {
            chosen.insert(qs[i * qs.len() / q].id.clone());
        }
    }
    questions
        .iter()
        .filter(|q| chosen.contains(&q.id))
        .map(|q| q.id.clone())
        .collect()
}

/// The share right (percent) of `r` on the questions `ids`, and per category on everything asked.
fn scores(r: &ExamResult, ids: &[String]) -> (f64, Vec<CategoryScore>) {
    let on: Vec<_> = r.results.iter().filter(|q| ids.contains(&q.id)).collect();
    let right = on.iter().filter(|q| q.society.pass).count() as u32;
    let pct = batos_protocol::exam::pct(right, on.len() as u32);
    (pct, r.summary.categories.clone())
}

/// Forged tools whose calls in `r` went with more wrong answers than right ones (and at least one wrong).
pub fn blamed_tools(r: &ExamResult, forged: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for name in forged {
        let (mut right, mut wrong) = (0, 0);
        for q in &r.results {
            if q.society
                .tools
                .iter()
                .any(|t| t.trim_end_matches('!') == name)
            {
                if q.society.pass {
                    right += 1;
                } else {
                    wrong += 1;
                }
            }
        }
        if wrong > right {
            out.push(name.clone());
        }
    }
    out
}

/// Counts the loops' events into the record's activity while the life runs (aborted when it ends).
fn count_events(
    ctx: &RunCtx,
    activity: Arc<Mutex<(LoopActivity, f64)>>,
) -> tokio::task::JoinHandle<()> {
    let mut rx = ctx.args.hub.subscribe();
    tokio::spawn(async move {
        let mut training: Option<Instant> = None;
        loop {
            let p = match rx.recv().await {
                Ok(p) => p,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            let mut g = activity.lock().unwrap_or_else(|p| p.into_inner());
            let (a, trainer_s) = &mut *g;
            let mut ended = false;
            match &p.event {
                Event::MemoryUpdated { .. } => a.memory_updates += 1,
                Event::ToolCreated { .. } => a.tools_created += 1,
                Event::ToolRetired { .. } => a.tools_retired += 1,
                Event::CuratorAccepted { .. } => a.curator_accepted += 1,
                Event::CuratorRejected { .. } => a.curator_rejected += 1,
                Event::CuratorTrigger { delivered, .. } => {
                    a.triggers += 1;
                    a.triggers_delivered += u64::from(*delivered);
                }
                Event::TrainerProgress { .. } => {
                    a.forge_steps += 1;
                    training.get_or_insert_with(Instant::now);
                }
                Event::ModelTuned { .. } => {
                    a.tuned += 1;
                    ended = true;
                }
                Event::TrainerRejected { .. } => {
                    a.forge_rejected += 1;
                    ended = true;
                }
                Event::TrainerFailed { .. } => {
                    a.forge_failed += 1;
                    ended = true;
                }
                Event::MotivatorGoal { .. } => a.goals += 1,
                Event::AmendmentProposed { .. } => a.amendments_proposed += 1,
                _ => {}
            }
            if ended {
                if let Some(t) = training.take() {
                    *trainer_s += t.elapsed().as_secs_f64();
                }
            }
        }
    })
}

/// Aborts the event counter when the job ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The job: lives `rec` to its end and tells the organ.
pub(super) async fn run(ctx: RunCtx, mut rec: LifeRecord, me: ActorRef<LifeMsg>) {
    let activity = Arc::new(Mutex::new((rec.activity.clone(), rec.cost.trainer_s)));
    let _counter = AbortOnDrop(count_events(&ctx, activity.clone()));
    let r = live(&ctx, &mut rec, &activity).await;
    absorb(&mut rec, &activity);
    let (status, error) = match r {
        Ok(()) => (LifeStatus::Done, None),
        Err(e) => (LifeStatus::Failed, Some(e)),
    };
    finish(&ctx, &mut rec, status, error);
    let _ = me.cast(LifeMsg::Ended(rec.summary.id.clone()));
}

fn absorb(rec: &mut LifeRecord, activity: &Arc<Mutex<(LoopActivity, f64)>>) {
    let g = activity.lock().unwrap_or_else(|p| p.into_inner());
    rec.activity = g.0.clone();
    rec.cost.trainer_s = g.1;
}

/// Ends a life: its switches put back, its status and end time recorded, `life.ended` published.
pub(super) fn finish(
    ctx: &RunCtx,
    rec: &mut LifeRecord,
    status: LifeStatus,
    error: Option<String>,
) {
    if let Err(e) = switches::restore(&ctx.args.settings_path, &rec.switched) {
        tracing::error!(event = "life.restore_failed", life = %rec.summary.id, error = %e, "the life's switches could not be put back");
    }
    rec.summary.status = status.as_str().into();
    rec.summary.finished_at = Some(unix_now());
    rec.summary.error = error;
    rec.exam_in_flight = None;
    if let Err(e) = ctx.store.save(rec) {
        tracing::error!(event = "life.save_failed", life = %rec.summary.id, error = %e, "the ended life's record was not written");
    }
    ctx.store.prune(ctx.args.settings.load().life.keep);
    ctx.args.hub.publish(Event::LifeEnded {
        summary: rec.summary.clone(),
    });
}

fn save(
    ctx: &RunCtx,
    rec: &mut LifeRecord,
    activity: &Arc<Mutex<(LoopActivity, f64)>>,
) -> Result<(), String> {
    absorb(rec, activity);
    ctx.store
        .save(rec)
        .map_err(|e| format!("the life's record could not be written: {e}"))
}

async fn live(
    ctx: &RunCtx,
    rec: &mut LifeRecord,
    activity: &Arc<Mutex<(LoopActivity, f64)>>,
) -> Result<(), String> {
    let tasks = rec.args.validate()?;
    rec.summary.total = tasks.len() as u32;
    // Recorded before written: a kill between the two re-applies the same values at the resume, and the end
    // puts back what the file held before the life.
    if rec.switched.is_empty() {
        let plan = switches::plan(&ctx.args.settings.load().life, rec.args.ablate.as_deref());
        rec.switched = switches::prepare(&ctx.args.settings_path, &plan)?;
        save(ctx, rec, activity)?;
    }
    switches::apply(&ctx.args.settings_path, &rec.switched)?;
    tracing::info!(event = "life.switched", life = %rec.summary.id, switches = ?rec.switched, "settings switched for the life");
    let waited = Instant::now();
    while !switches::in_force(&ctx.args.settings.load(), &rec.switched) {
        if waited.elapsed() > SWITCH_WAIT {
            return Err(
                "the daemon did not reload the life's switched settings within 60 s".into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some((phase, id)) = rec.exam_in_flight.clone() {
        let m = Meter::start();
        let r = ctx
            .args
            .exam
            .wait_end(&id, Duration::from_secs(86_400))
            .await
            .map_err(|e| e.to_string())?;
        point(ctx, rec, &phase, r, m).await?;
        save(ctx, rec, activity)?;
    }
    if !rec.exams.iter().any(|e| e.phase == "start") {
        exam(ctx, rec, activity, "start").await?;
    }
    let started = rec.summary.started_at;
    let every = rec.args.every as usize;
    // A kill after a task was recorded and before its check began: the check is taken now.
    let done = rec.tasks.len();
    if done > 0
        && done < tasks.len()
        && done.is_multiple_of(every)
        && !rec.exams.iter().any(|e| e.at_task as usize == done)
    {
        exam(ctx, rec, activity, "check").await?;
    }
    while rec.tasks.len() < tasks.len() {
        let bounds = ctx.args.settings.load().life.clone();
        let for_s = rec.args.for_s.unwrap_or(bounds.max_run_s);
        if unix_now() - started >= for_s as f64 {
            tracing::info!(event = "life.time_spent", life = %rec.summary.id, done = rec.tasks.len(), for_s, "the life's time is spent; no more tasks");
            break;
        }
        if rec.cost.task_tokens >= bounds.max_task_tokens {
            tracing::warn!(event = "life.budget_spent", life = %rec.summary.id, done = rec.tasks.len(), tokens = rec.cost.task_tokens, max_task_tokens = bounds.max_task_tokens, "the life's token budget is spent; no more tasks");
            break;
        }
        let index = rec.tasks.len();
        let t = super::task::one_task(
            ctx,
            &rec.summary.id,
            index as u32,
            &tasks[index].text,
            rec.args.approve_amendments,
            activity,
        )
        .await;
        rec.cost.tasks_s += t.ms as f64 / 1000.0;
        rec.tasks.push(t.record);
        rec.cost.tasks_cpu_s += t.cpu_s;
        rec.cost.task_tokens += t.tokens;
        rec.summary.done = rec.tasks.len() as u32;
        save(ctx, rec, activity)?;
        let last = rec.tasks.last().cloned().unwrap_or_default();
        ctx.args.hub.publish(Event::LifeProgress {
            life: rec.summary.id.clone(),
            done: rec.summary.done,
            total: rec.summary.total,
            task: last.task.clone(),
            status: last.status.clone(),
        });
        let quiet = Meter::start();
        tokio::time::sleep(Duration::from_millis(ctx.args.settings.load().life.pace_ms)).await;
        let (w, c) = quiet.stop();
        rec.cost.quiet_s += w;
        rec.cost.quiet_cpu_s += c;
        if rec.tasks.len().is_multiple_of(every) && rec.tasks.len() < tasks.len() {
            exam(ctx, rec, activity, "check").await?;
        }
    }
    exam(ctx, rec, activity, "end").await
}

/// Waits (at most `life.settle_ms`) until the trainer neither runs nor waits.
async fn settle(ctx: &RunCtx, rec: &mut LifeRecord) {
    let Some(trainer) = &ctx.args.trainer else {
        return;
    };
    let m = Meter::start();
    let (limit, poll) = {
        let s = ctx.args.settings.load();
        (
            Duration::from_millis(s.life.settle_ms),
            Duration::from_millis(s.life.poll_ms),
        )
    };
    let started = Instant::now();
    while started.elapsed() < limit {
        match trainer.status().await {
            Ok(st) if st.running.is_none() && st.queued.is_empty() => break,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(event = "life.trainer_unreachable", error = %e, "the trainer did not answer; the exam goes on");
                break;
            }
        }
        tokio::time::sleep(poll).await;
    }
    let (w, c) = m.stop();
    rec.cost.quiet_s += w;
    rec.cost.quiet_cpu_s += c;
}

/// Takes one exam of the life: `start` and `end` ask the full set (`start` beside the bare model), `check`
/// the held-out subset.
async fn exam(
    ctx: &RunCtx,
    rec: &mut LifeRecord,
    activity: &Arc<Mutex<(LoopActivity, f64)>>,
    phase: &str,
) -> Result<(), String> {
    settle(ctx, rec).await;
    let questions = parse_set(&rec.args.exam)?;
    let set = if phase == "check" {
        let keep: Vec<&ExamQuestion> = questions
            .iter()
            .filter(|q| rec.check_ids.contains(&q.id))
            .collect();
        keep.iter()
            .map(|q| serde_json::to_string(q).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        rec.args.exam.clone()
    };
    let args = ExamRunArgs {
        set,
        name: Some(format!(
            "life {} {phase} @{}",
            rec.summary.name,
            rec.tasks.len()
        )),
        baseline: (phase == "start").then(|| "bare".to_string()),
        judge: Some(false),
        categories: None,
    };
    let m = Meter::start();
    let wait = Duration::from_secs(86_400);
    let started = Instant::now();
    let summary = loop {
        match ctx.args.exam.run(args.clone()).await {
            Ok(s) => break s,
            Err(OrganError::Refused(crate::exam::ExamError::Conflict(_)))
                if started.elapsed() < wait =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(format!("the {phase} exam could not start: {e}")),
        }
    };
    rec.exam_in_flight = Some((phase.to_string(), summary.id.clone()));
    save(ctx, rec, activity)?;
    let r = ctx
        .args
        .exam
        .wait_end(&summary.id, wait)
        .await
        .map_err(|e| e.to_string())?;
    point(ctx, rec, phase, r, m).await?;
    save(ctx, rec, activity)
}

/// Records an ended exam as a point of the curve, retires the forged tools it blames, and rolls back when
/// a check fell too far.
async fn point(
    ctx: &RunCtx,
    rec: &mut LifeRecord,
    phase: &str,
    r: ExamResult,
    m: Meter,
) -> Result<(), String> {
    let (w, c) = m.stop();
    rec.cost.exams_s += w;
    rec.cost.exams_cpu_s += c;
    rec.exam_in_flight = None;
    let (check_pct, categories) = scores(&r, &rec.check_ids);
    let previous = rec.exams.last().cloned();
    let p = LifeExamPoint {
        phase: phase.to_string(),
        exam: r.summary.id.clone(),
        at_task: rec.tasks.len() as u32,
        check_pct,
        pct: r.summary.society_pct,
        bare_pct: r.summary.bare_pct,
        categories,
        at: unix_now(),
    };
    ctx.args.hub.publish(Event::LifeExam {
        life: rec.summary.id.clone(),
        exam: p.exam.clone(),
        phase: phase.to_string(),
        at_task: p.at_task,
        check_pct,
        pct: p.pct,
    });
    rec.exams.push(p);
    if rec.summary.start_pct.is_none() {
        rec.summary.start_pct = Some(check_pct);
    }
    rec.summary.latest_pct = Some(check_pct);
    let forged: BTreeSet<String> = ctx
        .args
        .tools
        .list()
        .into_iter()
        .filter(|t| t.origin != "builtin")
        .map(|t| t.name)
        .collect();
    for name in blamed_tools(&r, &forged) {
        retire(
            ctx,
            &name,
            &format!(
                "its calls went with more wrong exam answers than right in exam {}",
                r.summary.id
            ),
        );
    }
    if let Some(prev) = previous {
        let limit = ctx.args.settings.load().life.rollback_points;
        if check_pct < prev.check_pct - limit {
            let undone = undo(ctx, &prev.exam, &r).await;
            ctx.args.hub.publish(Event::LifeRolledBack {
                life: rec.summary.id.clone(),
                before: prev.check_pct,
                after: check_pct,
                undone: undone.clone(),
            });
            rec.rollbacks.push(LifeRollback {
                at_task: rec.tasks.len() as u32,
                before: prev.check_pct,
                after: check_pct,
                undone,
            });
        }
    }
    Ok(())
}

fn retire(ctx: &RunCtx, name: &str, reason: &str) -> bool {
    if !ctx.args.tools.retire(name, reason) {
        return false;
    }
    if let Err(e) = ctx.args.tool_store.retire(name) {
        tracing::error!(event = "tool.retire_failed", tool = %name, error = %e, "the retired tool's record was not moved aside; it returns at the next start");
    }
    true
}

/// Undoes what changed between exam `before` and `now` (their fingerprints): a persona on a new model is
/// rolled back through the trainer, a new forged tool is retired. Answers what was undone, in words.
async fn undo(ctx: &RunCtx, before: &str, now: &ExamResult) -> Vec<String> {
    let Ok(prev) = ctx.args.exam.get(before.to_string()).await else {
        return vec![];
    };
    let mut out = Vec::new();
    for (persona, p) in &now.fingerprint.personas {
        let old = prev.fingerprint.personas.get(persona);
        if old.is_some_and(|o| o.model != p.model) {
            match ctx.args.trainer.as_ref() {
                Some(t) => match t.rollback(persona.clone()).await {
                    Ok((from, to)) => out.push(format!("{persona}: {from} → {to}")),
                    Err(e) => out.push(format!("{persona}: not rolled back ({e})")),
                },
                None => out.push(format!("{persona}: not rolled back (no trainer)")),
            }
        }
    }
    let had: BTreeSet<String> = prev
        .fingerprint
        .tool_names
        .iter()
        .map(|t| t.split(' ').next().unwrap_or(t).to_string())
        .collect();
    for t in &now.fingerprint.tool_names {
        let name = t.split(' ').next().unwrap_or(t);
        if !had.contains(name) && retire(ctx, name, "a life's check fell after it was made") {
            out.push(format!("tool {name} retired"));
        }
    }
    out
}
