//! The exam as a gate: a set asked through the household as it stands, its share right as one number. The
//! forge's exam gate (`trainer.exam_gate`) and a life's checks use it; both wait their turn when another exam
//! runs (the organ runs one at a time).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use batos_protocol::exam::{ExamResult, ExamRunArgs, ExamStatus};

use super::{ExamError, ExamHandle};
use crate::ask::OrganError;
use crate::ports::ExamGate;

/// How often a waiting gate looks again.
const POLL: Duration = Duration::from_millis(250);

impl ExamHandle {
    /// Starts `args`, waiting up to `wait` while another exam runs; then waits up to `wait` again for it to
    /// end and answers its result (done, or cancelled/failed with what was answered).
    pub async fn run_to_end(
        &self,
        args: ExamRunArgs,
        wait: Duration,
    ) -> Result<ExamResult, OrganError<ExamError>> {
        let started = Instant::now();
        let summary = loop {
            match self.run(args.clone()).await {
                Ok(s) => break s,
                Err(OrganError::Refused(ExamError::Conflict(why))) if started.elapsed() < wait => {
                    tracing::debug!(event = "exam.gate_waiting", why = %why, "another exam runs; waiting");
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.wait_end(&summary.id, wait).await
    }

    /// Waits up to `wait` for run `id` to end; answers its result. A run still going at the deadline is
    /// cancelled and answered as it stands.
    pub async fn wait_end(
        &self,
        id: &str,
        wait: Duration,
    ) -> Result<ExamResult, OrganError<ExamError>> {
        let started = Instant::now();
        loop {
            let r = self.get(id.to_string()).await?;
            if r.summary.status != ExamStatus::Running.as_str() {
                return Ok(r);
            }
            if started.elapsed() >= wait {
                let _ = self.cancel(id.to_string()).await;
                return self.get(id.to_string()).await;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[async_trait]
impl ExamGate for ExamHandle {
    async fn score(&self, name: String, set: String, wait: Duration) -> Result<f64, String> {
        let args = ExamRunArgs {
            set,
            name: Some(name),
            baseline: None,
            judge: Some(false),
            categories: None,
        };
        let r = self
            .run_to_end(args, wait)
            .await
            .map_err(|e| e.to_string())?;
        if r.summary.status != ExamStatus::Done.as_str() {
            return Err(format!(
                "the gate's exam {} ended {} ({})",
                r.summary.id,
                r.summary.status,
                r.error.unwrap_or_default()
            ));
        }
        Ok(r.summary.society_pct)
    }
}
