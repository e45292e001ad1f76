//! Human ratings: recorded, then applied to a task's decided exchanges (and re-applied at every start).

use super::*;

/// Longest human comment, in bytes.
const MAX_COMMENT_BYTES: usize = 2000;

impl CuratorState {
    /// Applies the rating in force for `task` to its decided exchanges (idempotent): a low one removes kept
    /// examples, a high one admits refusals it may overturn. Returns `(removed, admitted)`.
    pub(super) fn apply_rating(&mut self, task: &str) -> Result<(usize, usize), CuratorError> {
        let Some(rating) = self.ratings.get(task).cloned() else {
            return Ok((0, 0));
        };
        let s = self.settings();
        let prefix = format!("{task}/");
        let (mut removed, mut admitted) = (0, 0);
        let personas: Vec<String> = self.sets.keys().cloned().collect();
        let hub = self.args.hub.clone();
        for persona in personas {
            if rating.score <= s.human_reject_at_most {
                let Some(set) = self.sets.get_mut(&persona) else {
                    continue;
                };
                let gone: HashSet<String> = set
                    .kept
                    .keys()
                    .filter(|k| k.starts_with(&prefix))
                    .cloned()
                    .collect();
                if gone.is_empty() {
                    continue;
                }
                let mut out_examples = Vec::new();
                for split in [Split::Train, Split::Heldout] {
                    let path = set.file(split);
                    let (all, _) =
                        read_lines::<Example>(&path).map_err(|e| io_err("dataset file", e))?;
                    let (out, keep): (Vec<Example>, Vec<Example>) = all
                        .into_iter()
                        .partition(|ex| gone.contains(&ex.lineage.key));
                    rewrite(&path, &keep).map_err(|e| io_err("dataset file", e))?;
                    out_examples.extend(out);
                }
                for k in &gone {
                    set.kept.remove(k);
                }
                set.reindex(params(&s))
                    .map_err(|e| io_err("dataset file", e))?;
                for mut ex in out_examples {
                    ex.lineage.human = Some(rating.clone());
                    let d = Decision {
                        key: ex.lineage.key.clone(),
                        task: task.to_string(),
                        step: ex.lineage.step,
                        outcome: Reason::HumanRejected.code().into(),
                        split: None,
                        detail: format!("a human rated the task {}", rating.score),
                        score: None,
                        at: unix_now(),
                        example: Some(ex.clone()),
                    };
                    append_line(&set.decisions(), &d).map_err(|e| io_err("decisions.jsonl", e))?;
                    set.outcomes
                        .insert(d.key.clone(), Reason::HumanRejected.code().into());
                    set.held.insert(d.key.clone(), ex);
                    removed += 1;
                    hub.publish(Event::CuratorRejected {
                        task: task.to_string(),
                        step: d.step,
                        persona: persona.clone(),
                        reason: d.outcome,
                        detail: d.detail,
                    });
                }
            } else if rating.score >= s.human_accept_at_least {
                let set = self.set(&persona)?;
                let mut candidates: Vec<Example> = set
                    .held
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .filter(|(k, _)| {
                        set.outcomes.get(*k).is_some_and(|o| {
                            serde_json::from_value::<Reason>(serde_json::Value::String(o.clone()))
                                .is_ok_and(Reason::overridable)
                        })
                    })
                    .map(|(_, ex)| ex.clone())
                    .collect();
                candidates.sort_by(|a, b| a.lineage.key.cmp(&b.lineage.key));
                for mut ex in candidates {
                    let set = self.set(&persona)?;
                    let prepared = set.index.prepare(&ex.dedupe_text());
                    if set.index.check(&prepared) != Verdict::New {
                        continue;
                    }
                    ex.lineage.human = Some(rating.clone());
                    ex.lineage.at = unix_now();
                    if !ex.lineage.filters.iter().any(|f| f == "human") {
                        ex.lineage.filters.push("human".into());
                    }
                    let detail = format!("a human rated the task {}", rating.score);
                    self.keep(ex, prepared, detail)?;
                    admitted += 1;
                }
            }
        }
        Ok((removed, admitted))
    }

    pub(super) fn rate(
        &mut self,
        task: String,
        score: u8,
        comment: Option<String>,
    ) -> Result<RateOutcome, CuratorError> {
        if !valid_task_id(&task) {
            return Err(CuratorError::Invalid(format!(
                "`{}` is not a task id",
                batos_protocol::truncate(&task, 64)
            )));
        }
        if !(1..=5).contains(&score) {
            return Err(CuratorError::Invalid(format!(
                "score must be 1 to 5, not {score}"
            )));
        }
        let comment = comment
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty());
        if comment
            .as_ref()
            .is_some_and(|c| c.len() > MAX_COMMENT_BYTES)
        {
            return Err(CuratorError::Invalid(format!(
                "comment is longer than {MAX_COMMENT_BYTES} bytes"
            )));
        }
        let rating = Rating {
            task: task.clone(),
            score,
            comment,
            at: unix_now(),
        };
        // Recorded before it is applied: a crash in between is settled by the re-application at start.
        append_line(&self.ratings_path(), &rating).map_err(|e| io_err("ratings.jsonl", e))?;
        self.ratings.insert(task.clone(), rating);
        let (removed, admitted) = self.apply_rating(&task)?;
        Ok(RateOutcome {
            pending: self.remaining.get(&task).copied().unwrap_or(0),
            task,
            score,
            removed,
            admitted,
        })
    }
}
