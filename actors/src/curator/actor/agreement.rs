//! The judge's agreement with the exam: the latest figures an exam run reported, kept in
//! `agreement.json` (atomically) so `curator_stats` shows them across restarts.

use super::*;

impl CuratorState {
    fn agreement_path(&self) -> PathBuf {
        self.args.dir.join("agreement.json")
    }

    /// Reads the kept figures; a missing or unreadable file is no figures (it is rewritten at the next run).
    pub(super) fn load_agreement(&mut self) {
        self.agreement = std::fs::read(self.agreement_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
    }

    /// Keeps `a` as the latest figures.
    pub(super) fn record_agreement(&mut self, a: JudgeAgreement) -> Result<(), CuratorError> {
        if a.agreed > a.judged {
            return Err(CuratorError::Invalid(format!(
                "{} agreements of {} verdicts",
                a.agreed, a.judged
            )));
        }
        let bytes = serde_json::to_vec_pretty(&a).map_err(|e| io_err("agreement", e))?;
        crate::fsutil::atomic_write(&self.agreement_path(), &bytes)
            .map_err(|e| io_err("agreement.json", e))?;
        tracing::info!(event = "curator.judge_agreement", exam = %a.exam, judged = a.judged, agreed = a.agreed, "the judge's agreement with an exam recorded");
        self.agreement = Some(a);
        Ok(())
    }
}
