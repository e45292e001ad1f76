//! One curriculum task of a life: sent as a person's task under its request id, waited for (an amendment
//! approved under the life's policy), timed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use batos_protocol::life::{LifeTaskRecord, LoopActivity};
use batos_protocol::TaskStatus;

use super::ctx::{Meter, RunCtx};

/// One curriculum task as it went.
pub(super) struct TaskRun {
    pub record: LifeTaskRecord,
    pub ms: u64,
    pub cpu_s: f64,
    pub tokens: u64,
}

/// Sends curriculum task `index` as a person's task (request id `life-<life>-<index>`, so a resumed life
/// finds it again) and waits for its end, at most `life.task_timeout_ms` (then it is cancelled). A task
/// paused for the Architect is approved under the amendment policy, else left paused.
pub(super) async fn one_task(
    ctx: &RunCtx,
    life: &str,
    index: u32,
    text: &str,
    approve: bool,
    activity: &Arc<Mutex<(LoopActivity, f64)>>,
) -> TaskRun {
    let m = Meter::start();
    let mut record = LifeTaskRecord {
        index,
        task: None,
        status: "refused".into(),
        ms: 0,
    };
    let mut tokens = 0;
    match ctx
        .args
        .tasks
        .submit(text.to_string(), format!("life-{life}-{index}"))
        .await
    {
        Err(e) => {
            tracing::warn!(event = "life.task_refused", life, index, error = %e, "a curriculum task was refused");
        }
        Ok(id) => {
            record.task = Some(id.clone());
            *ctx.in_flight.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.clone());
            let (status, t) = wait_task(ctx, &id, approve, activity).await;
            record.status = status;
            tokens = t;
            *ctx.in_flight.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }
    let (w, c) = m.stop();
    let ms = (w * 1000.0) as u64;
    record.ms = ms;
    TaskRun {
        record,
        ms,
        cpu_s: c,
        tokens,
    }
}

async fn wait_task(
    ctx: &RunCtx,
    id: &str,
    approve: bool,
    activity: &Arc<Mutex<(LoopActivity, f64)>>,
) -> (String, u64) {
    let (timeout, poll) = {
        let s = ctx.args.settings.load();
        (
            Duration::from_millis(s.life.task_timeout_ms),
            Duration::from_millis(s.life.poll_ms),
        )
    };
    let started = Instant::now();
    let mut approved = BTreeSet::new();
    loop {
        if let Ok(Some(t)) = ctx.args.tasks.get(id.to_string()).await {
            let tokens = t.steps.iter().map(|s| s.tokens).sum();
            match t.status {
                TaskStatus::Done => return ("done".into(), tokens),
                TaskStatus::Failed => return ("failed".into(), tokens),
                TaskStatus::Cancelled => return ("cancelled".into(), tokens),
                TaskStatus::Paused if !approve => return ("paused".into(), tokens),
                TaskStatus::Paused => {
                    if let Ok(list) = ctx.args.codex.list().await {
                        let pending: Vec<_> = list
                            .into_iter()
                            .filter(|a| {
                                a.task_id.as_deref() == Some(id)
                                    && a.status == crate::codex::AmendmentStatus::Pending
                                    && !approved.contains(&a.id)
                            })
                            .collect();
                        for a in pending {
                            approved.insert(a.id.clone());
                            match ctx.args.codex.approve(a.id.clone()).await {
                                Ok(_) => {
                                    tracing::warn!(event = "life.amendment_approved", task = %id, amendment = %a.id, "approved by the life's amendment policy (--approve-amendments)");
                                    activity
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .0
                                        .amendments_approved += 1;
                                }
                                Err(e) => {
                                    tracing::warn!(event = "life.amendment_not_approved", task = %id, error = %e, "the policy's approval failed");
                                }
                            }
                        }
                    }
                }
                TaskStatus::Queued | TaskStatus::Running => {}
            }
        }
        if started.elapsed() >= timeout {
            let _ = ctx.args.tasks.cancel(id.to_string()).await;
            return ("timeout".into(), 0);
        }
        tokio::time::sleep(poll).await;
    }
}
