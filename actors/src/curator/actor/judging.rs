//! The judge's part of the pipeline: the job that asks the judge persona, and what its answer decides.

use super::*;

impl CuratorState {
    /// Starts the judge job for `c`: it waits while any task runs, asks the judge persona, and sends the
    /// answer back as `Judged`.
    pub(super) async fn start_judge(
        &mut self,
        myself: &ActorRef<CuratorMsg>,
        s: &CuratorSettings,
        c: &Candidate,
    ) -> Result<(), CuratorError> {
        let prompt = judge::prompt(
            &c.persona,
            &c.node,
            c.request(),
            &c.answer,
            s.judge_max_bytes,
        );
        let (hub, personas, me) = (
            self.args.hub.clone(),
            self.args.personas.clone(),
            myself.clone(),
        );
        let (judge_persona, poll, key) = (
            s.judge.clone(),
            Duration::from_millis(s.idle_poll_ms),
            c.key.clone(),
        );
        let work = async move {
            // Never compete with an answer someone is waiting for.
            while hub.running_tasks() > 0 {
                tokio::time::sleep(poll).await;
            }
            let req = ThinkRequest {
                messages: vec![ChatMessage::new(Role::User, prompt)],
                tools: Vec::new(),
                format: Some(judge::schema()),
                tokens: None,
                sample: 0,
            };
            let reply: JudgeReply = personas
                .think(&judge_persona, req)
                .await
                .map(|t| (t.persona, t.model, t.generation, t.response.content))
                .map_err(|e| e.to_string());
            let _ = me.cast(CuratorMsg::Judged(key.clone(), reply));
        };
        self.jobs
            .spawn(&myself.get_cell(), CuratorJob::Judge(c.key.clone()), work)
            .await
            .map_err(|e| CuratorError::Store(format!("cannot start the judge: {e}")))?;
        Ok(())
    }

    pub(super) fn judged(&mut self, key: &str, reply: JudgeReply) -> Result<(), CuratorError> {
        let Some((c, p, mut passed)) = self.judging.take() else {
            return Ok(());
        };
        if c.key != key {
            self.judging = Some((c, p, passed));
            return Ok(());
        }
        let s = self.settings();
        let (persona, model, generation, text) = match reply {
            Ok(r) => r,
            Err(why) => {
                return self.reject(
                    &c,
                    Reason::JudgeUnavailable,
                    format!("the judge could not be asked: {why}"),
                    &passed,
                    None,
                )
            }
        };
        let parsed = match judge::parse(&text) {
            Ok(p) => p,
            Err(why) => return self.reject(&c, Reason::JudgeUnparseable, why, &passed, None),
        };
        let verdict = JudgeVerdict {
            persona,
            model,
            generation,
            score: parsed.score,
            reason: parsed.reason,
        };
        // A rating may have arrived while the judge worked: it overrides the judge.
        let human = self.ratings.get(&c.task.id).map(|r| r.score);
        if let Some(h) = human.filter(|h| *h <= s.human_reject_at_most) {
            return self.reject(
                &c,
                Reason::HumanRejected,
                format!("a human rated the task {h}"),
                &passed,
                Some(verdict),
            );
        }
        let admitted = human.is_some_and(|h| h >= s.human_accept_at_least);
        if verdict.score < s.min_score && !admitted {
            let detail = format!(
                "judge scored {} (below {}): {}",
                verdict.score, s.min_score, verdict.reason
            );
            return self.reject(&c, Reason::JudgeLow, detail, &passed, Some(verdict));
        }
        passed.push("judge");
        // Another exchange may have been kept while this one was judged.
        let dup = self.set(&c.persona)?.index.check(&p);
        match dup {
            Verdict::Exact(k) => self.reject(
                &c,
                Reason::Duplicate,
                format!("the same text was kept as {k} meanwhile"),
                &passed,
                Some(verdict),
            ),
            Verdict::Near(k, j) => self.reject(
                &c,
                Reason::NearDuplicate,
                format!("estimated Jaccard {j:.2} with {k}, kept meanwhile"),
                &passed,
                Some(verdict),
            ),
            Verdict::New => self.accept(&c, p, &passed, Some(verdict)),
        }
    }
}
