//! A candidate's fate, written down: the lineage every decision carries, a refusal recorded with its
//! reason, and a kept example appended to its persona's training or held-out set (then the trigger checked).

use super::*;

impl CuratorState {
    pub(super) fn lineage(
        &self,
        c: &Candidate,
        hash: String,
        filters: &[&'static str],
        judge: Option<JudgeVerdict>,
    ) -> Lineage {
        let s = self.settings();
        let split = if percentile(&hash) < s.heldout_percent {
            Split::Heldout
        } else {
            Split::Train
        };
        Lineage {
            key: c.key.clone(),
            task: c.task.id.clone(),
            request: c.task.text.clone(),
            step: c.step,
            node: c.node.clone(),
            persona: c.persona.clone(),
            model: c.model.clone(),
            generation: c.generation,
            hash,
            split,
            dissonance: c.task.dissonance,
            judge,
            human: self.ratings.get(&c.task.id).cloned(),
            filters: filters.iter().map(|f| f.to_string()).collect(),
            at: unix_now(),
        }
    }

    /// Records a refusal.
    pub(super) fn reject(
        &mut self,
        c: &Candidate,
        reason: Reason,
        detail: String,
        filters: &[&'static str],
        judge: Option<JudgeVerdict>,
    ) -> Result<(), CuratorError> {
        let score = judge.as_ref().map(|j| j.score);
        let example = reason.keeps_example().then(|| {
            let hash = content_hash(&normalise(&c.dedupe_text()));
            c.example(self.lineage(c, hash, filters, judge))
        });
        let decision = Decision {
            key: c.key.clone(),
            task: c.task.id.clone(),
            step: c.step,
            outcome: reason.code().into(),
            split: None,
            detail: detail.clone(),
            score,
            at: unix_now(),
            example: example.clone(),
        };
        let set = self.set(&c.persona)?;
        append_line(&set.decisions(), &decision).map_err(|e| io_err("decisions.jsonl", e))?;
        set.outcomes.insert(c.key.clone(), reason.code().into());
        match example {
            Some(ex) => set.held.insert(c.key.clone(), ex),
            None => set.held.remove(&c.key),
        };
        self.args.hub.publish(Event::CuratorRejected {
            task: c.task.id.clone(),
            step: c.step,
            persona: c.persona.clone(),
            reason: reason.code().into(),
            detail,
        });
        self.done_one(c);
        Ok(())
    }

    /// Keeps an example: appended to its split's file first, then its decision (see the module essay).
    pub(super) fn keep(
        &mut self,
        ex: Example,
        prepared: Prepared,
        detail: String,
    ) -> Result<(), CuratorError> {
        let (persona, key, split) = (
            ex.lineage.persona.clone(),
            ex.lineage.key.clone(),
            ex.lineage.split,
        );
        let score = ex.lineage.judge.as_ref().map(|j| j.score);
        let set = self.set(&persona)?;
        append_line(&set.file(split), &ex).map_err(|e| io_err("dataset file", e))?;
        set.index.insert(&key, prepared);
        set.kept.insert(key.clone(), split);
        set.held.remove(&key);
        set.outcomes.insert(key.clone(), ACCEPTED.into());
        let decision = Decision {
            key,
            task: ex.lineage.task.clone(),
            step: ex.lineage.step,
            outcome: ACCEPTED.into(),
            split: Some(split),
            detail,
            score,
            at: unix_now(),
            example: None,
        };
        append_line(&set.decisions(), &decision).map_err(|e| io_err("decisions.jsonl", e))?;
        self.args.hub.publish(Event::CuratorAccepted {
            task: ex.lineage.task.clone(),
            step: ex.lineage.step,
            persona: persona.clone(),
            split: split.as_str().into(),
            score,
        });
        if split == Split::Train {
            self.maybe_trigger(&persona)?;
        }
        Ok(())
    }

    pub(super) fn accept(
        &mut self,
        c: &Candidate,
        prepared: Prepared,
        filters: &[&'static str],
        judge: Option<JudgeVerdict>,
    ) -> Result<(), CuratorError> {
        let detail = match (&judge, self.ratings.get(&c.task.id)) {
            (Some(j), _) => format!("judge scored {}: {}", j.score, j.reason),
            (None, Some(r)) => format!("a human rated the task {}", r.score),
            (None, None) => match c
                .task
                .grounding
                .as_ref()
                .filter(|_| c.grounded(&self.settings()))
            {
                Some(g) => format!("grounded in {}", batos_protocol::truncate(&g.source, 200)),
                None => "passed every check".into(),
            },
        };
        let lineage = self.lineage(c, prepared.hash.clone(), filters, judge);
        self.keep(c.example(lineage), prepared, detail)?;
        self.done_one(c);
        Ok(())
    }
}
