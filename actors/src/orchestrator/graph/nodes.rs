//! The graph's nodes: each step's prompt, its persona call and the edge it takes next.

use batos_protocol::truncate;
use serde_json::{json, Value};

use super::{request, Runner, StepOut, SUMMARY_BYTES};
use crate::events::Event;
use crate::llm::{ChatMessage, Role, ToolSpec};
use crate::orchestrator::reading::read;
use crate::orchestrator::{Inquiry, Node, TaskState, TaskStatus};
use crate::personas::Thought;
use crate::settings::OrchestratorSettings;

/// JSON schema of ALFRED's routing decision.
pub fn route_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "needs_research": {"type": "boolean"},
            "plan": {"type": "string"}
        },
        "required": ["needs_research", "plan"]
    })
}

/// JSON schema of ROBIN's critique.
pub fn critique_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "dissonance": {"type": "number", "minimum": 0, "maximum": 1},
            "critique": {"type": "string"}
        },
        "required": ["dissonance", "critique"]
    })
}

impl Runner {
    pub(super) async fn route(&mut self, task: &mut TaskState) -> Result<StepOut, String> {
        if task.reading.is_none() {
            let s = self.cog.settings.load().orchestrator.clone();
            task.reading = Some(read(
                &task.text,
                task.goal().is_some(),
                &s,
                &self.household(),
            ));
        }
        if Self::is_direct(task) {
            return Ok(self.route_direct(task).await);
        }
        let prompt = format!(
            "{}\nDecide how the household should handle this task. Answer in JSON: `needs_research` is true when \
             facts from memory or earlier tasks are needed; `plan` is one or two sentences for BRICK.",
            Self::brief(task)
        );
        let t = self
            .think(
                &task.id,
                "ALFRED",
                request(prompt, Some(route_schema()), false),
            )
            .await?;
        match serde_json::from_str::<Value>(&t.response.content) {
            Ok(v) => {
                task.needs_research = v
                    .get("needs_research")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                task.plan = v.get("plan").and_then(Value::as_str).map(str::to_string);
            }
            Err(_) => {
                // A model that ignores the format still gets heard: its text becomes the plan.
                task.needs_research = false;
                task.plan = Some(t.response.content.clone());
            }
        }
        // A goal the Motivator set for BABS is research by definition.
        if task.goal().is_some_and(|o| o.persona == "BABS") {
            task.needs_research = true;
        }
        // BABS joins when ALFRED asks for research, or when memory holds something relevant to the task.
        if let Some(memory) = &self.cog.memory {
            match memory.retrieve(&task.text).await {
                Ok(notes) => task.memories = self.bearing(&task.text, &notes),
                Err(e) => {
                    tracing::warn!(event = "memory.retrieve_failed", task = %task.id, error = %e, "memory not consulted")
                }
            }
        }
        let next = if task.needs_research || !task.memories.is_empty() {
            Node::Research
        } else {
            Node::Draft
        };
        let plan = task.plan.clone().unwrap_or_default();
        Ok(StepOut::from_thought(&t, &plan, next))
    }

    pub(super) async fn research(&mut self, task: &mut TaskState) -> Result<StepOut, String> {
        if Self::is_direct(task) {
            return Ok(self.research_direct(task));
        }
        let memories = task.memories.clone();
        if memories.is_empty() {
            // Research was asked for and memory holds nothing: a question the household could not ground.
            self.cog.hub.publish(Event::KnowledgeGap {
                task: Some(task.id.clone()),
                query: truncate(&task.text, batos_protocol::EVENT_TEXT_BYTES).to_string(),
                best: None,
            });
            // Notes from nothing are invented notes, and cost a model call (10–25 s on the embedded model).
            let notes = "No memories match this task.".to_string();
            task.context = Some(notes.clone());
            let h = self.personas.get("BABS");
            return Ok(StepOut {
                persona: "BABS".into(),
                model: String::new(),
                backend: h.map(|h| h.backend.to_string()).unwrap_or_default(),
                dissonance: None,
                summary: notes,
                next: Node::Draft,
                finish: None,
            });
        }
        let mut prompt = Self::brief(task);
        prompt.push_str("\nMemories that may be relevant:\n");
        // Nearest first, within the byte budget: every prompt byte is prefill time on a small CPU model.
        let mut budget = self.cog.settings.load().orchestrator.research_max_bytes;
        for m in &memories {
            if budget == 0 {
                break;
            }
            let m = truncate(m, budget);
            budget = budget.saturating_sub(m.len());
            prompt.push_str(&format!("- {m}\n"));
        }
        prompt.push_str("\nWrite short research notes for BRICK, each with its source.");
        let t = self
            .think(&task.id, "BABS", request(prompt, None, false))
            .await?;
        task.context = Some(t.response.content.clone());
        Ok(StepOut::from_thought(&t, &t.response.content, Node::Draft))
    }

    pub(super) async fn draft(
        &mut self,
        task: &mut TaskState,
        s: &OrchestratorSettings,
    ) -> Result<StepOut, String> {
        if Self::is_direct(task) {
            return Ok(self.draft_direct(task).await);
        }
        task.iteration += 1;
        let mut prompt = Self::brief(task);
        if let (Some(d), Some(c)) = (task.drafts.last(), task.critiques.last()) {
            prompt.push_str(&format!(
                "\nYour previous draft:\n{d}\n\nROBIN's critique (dissonance {:.2}):\n{c}\n",
                task.dissonance.unwrap_or(0.0)
            ));
        }
        prompt.push_str(
            "\nWrite your draft answer. Use the offered tools when they help; if a capability is missing, call \
             request_capability.",
        );
        let mut convo = vec![ChatMessage::new(Role::User, prompt)];
        let mut goto: Option<Node> = None;
        let mut calls_left = s.max_tool_calls_per_step;
        let mut last: Option<Thought>;
        loop {
            // Bind the registry's tools as they are now: a tool registered a moment ago is offered here.
            let tools: Vec<ToolSpec> = self
                .cog
                .tools
                .snapshot()
                .values()
                .map(|t| t.spec().clone())
                .collect();
            let mut req = request(String::new(), None, s.stream_tokens);
            req.messages = convo.clone();
            req.tools = tools;
            let t = self.think(&task.id, "BRICK", req).await?;
            let calls = t.response.tool_calls.clone();
            last = Some(t);
            if calls.is_empty() || calls_left == 0 {
                break;
            }
            let mut assistant = ChatMessage::new(
                Role::Assistant,
                last.as_ref()
                    .map(|t| t.response.content.clone())
                    .unwrap_or_default(),
            );
            assistant.tool_calls = calls.clone();
            convo.push(assistant);
            for call in calls {
                if calls_left == 0 {
                    convo.push(ChatMessage::new(
                        Role::Tool,
                        format!(
                            "tool error: the step's tool-call limit ({}) is reached",
                            s.max_tool_calls_per_step
                        ),
                    ));
                    continue;
                }
                calls_left -= 1;
                let (msg, jump) = self.run_tool(task, &call).await;
                convo.push(ChatMessage::new(Role::Tool, msg));
                if jump.is_some() {
                    goto = jump;
                }
            }
            if goto.is_some() {
                break;
            }
        }
        let t = last.ok_or("BRICK made no model call")?;
        let text = t.response.content.clone();
        if !text.trim().is_empty() {
            task.drafts.push(text.clone());
        }
        let next = goto.unwrap_or(Node::Critique);
        let summary = if text.trim().is_empty() {
            format!("(no draft; routed to {next})")
        } else {
            text
        };
        let mut out = StepOut::from_thought(&t, &summary, next);
        out.dissonance = if goto.is_some() {
            task.dissonance
        } else {
            None
        };
        Ok(out)
    }

    pub(super) async fn critique(
        &mut self,
        task: &mut TaskState,
        s: &OrchestratorSettings,
    ) -> Result<StepOut, String> {
        let draft = task.drafts.last().cloned().unwrap_or_default();
        let prompt = format!(
            "{}\nBRICK's draft:\n{draft}\n\nCritique the draft against the task and your principles. Answer in JSON: \
             `dissonance` from 0 (in harmony) to 1 (discordant) and `critique`.",
            Self::brief(task)
        );
        let t = self
            .think(
                &task.id,
                "ROBIN",
                request(prompt, Some(critique_schema()), false),
            )
            .await?;
        let (d, critique) = match serde_json::from_str::<Value>(&t.response.content) {
            Ok(v) => (
                v.get("dissonance")
                    .and_then(Value::as_f64)
                    .map(|d| d.clamp(0.0, 1.0)),
                v.get("critique")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ),
            Err(_) => (None, t.response.content.clone()),
        };
        // An unscorable critique is treated as consonant rather than looping forever on noise.
        let d = d.unwrap_or(0.0);
        let verdict = Verdict::of(&critique, task.critiques.last().map(String::as_str), s);
        task.dissonance = Some(d);
        task.critiques.push(critique.clone());
        let next = after_critique(task, s, verdict);
        let summary = match verdict {
            _ if d <= s.dissonance_threshold => critique,
            Verdict::Bare => format!("(dissonance {d:.2} not acted on: the critique gives no reason) {critique}"),
            Verdict::Same if next == Node::Synthesize => format!(
                "(dissonance {d:.2}: the same complaint again, and below the inquiry threshold) {critique}"
            ),
            Verdict::New if next == Node::Synthesize && task.iteration >= s.max_iterations => format!(
                "(dissonance {d:.2} after the last round: a new complaint, not a persistent one) {critique}"
            ),
            _ => critique,
        };
        let mut out = StepOut::from_thought(&t, &summary, next);
        out.dissonance = Some(d);
        Ok(out)
    }

    pub(super) async fn toolforge(&mut self, task: &mut TaskState) -> Result<StepOut, String> {
        let gap = task.capability_gap.take().unwrap_or_default();
        let active = self.cog.settings.load().tools.forge_active;
        let forge = self.cog.forge.as_ref().filter(|_| active);
        let (summary, model) = match forge {
            None if !active => {
                task.notes.push(format!(
                    "The ToolForge is switched off; the capability `{gap}` stays missing."
                ));
                tracing::info!(event = "toolforge.inactive", task = %task.id, gap = %gap, "tools.forge_active is off: no tool is made");
                ("toolforge switched off".to_string(), String::new())
            }
            None => {
                task.notes.push(format!(
                    "No ToolForge is available; the capability `{gap}` stays missing."
                ));
                ("no toolforge available".to_string(), String::new())
            }
            Some(forge) => match forge.forge(&task.id, &gap).await {
                Ok(name) => {
                    task.notes.push(format!("The ToolForge created the tool `{name}` for: {gap}. It is offered to you now."));
                    (
                        format!("created tool {name}"),
                        self.personas
                            .get("BRICK")
                            .map(|h| h.model.clone())
                            .unwrap_or_default(),
                    )
                }
                Err(e) => {
                    task.notes.push(format!(
                        "The ToolForge could not create a tool for `{gap}`: {e}"
                    ));
                    (format!("toolforge failed: {e}"), String::new())
                }
            },
        };
        let backend = self
            .personas
            .get("BRICK")
            .map(|h| h.backend.to_string())
            .unwrap_or_default();
        Ok(StepOut {
            persona: "BRICK".into(),
            model,
            backend,
            dissonance: None,
            summary: truncate(&summary, SUMMARY_BYTES).to_string(),
            next: Node::Draft,
            finish: None,
        })
    }

    pub(super) async fn inquiry(&mut self, task: &mut TaskState) -> Result<StepOut, String> {
        let reason = format!(
            "dissonance stayed at {:.2} after {} drafting rounds",
            task.dissonance.unwrap_or(0.0),
            task.iteration
        );
        let amendment_id = match &self.cog.inquiry {
            Some(h) => match h.open(task).await {
                Ok(id) => Some(id),
                Err(e) => {
                    task.notes
                        .push(format!("No amendment could be proposed: {e}"));
                    None
                }
            },
            None => None,
        };
        let summary = match &amendment_id {
            Some(id) => format!("paused for the Architect; amendment {id} proposed"),
            None => "paused for the Architect".to_string(),
        };
        task.inquiry = Some(Inquiry {
            reason,
            amendment_id,
            decision: None,
            guidance: None,
        });
        task.status = TaskStatus::Paused;
        let h = self.personas.get("ROBIN");
        Ok(StepOut {
            persona: "ROBIN".into(),
            model: h.map(|h| h.model.clone()).unwrap_or_default(),
            backend: h.map(|h| h.backend.to_string()).unwrap_or_default(),
            dissonance: task.dissonance,
            summary,
            next: Node::AwaitDecision,
            finish: None,
        })
    }

    pub(super) async fn synthesize(&mut self, task: &mut TaskState) -> Result<StepOut, String> {
        if Self::is_direct(task) {
            return self.synthesize_direct(task).await;
        }
        let mut prompt = Self::brief(task);
        if let Some(d) = task.drafts.last() {
            prompt.push_str(&format!("\nBRICK's final draft:\n{d}\n"));
        }
        if let Some(c) = task.critiques.last() {
            prompt.push_str(&format!("\nROBIN's last critique:\n{c}\n"));
        }
        // The answer is for a person: no persona names, drafts or plans unless the task asked about them.
        prompt.push_str(
            "\nWrite the final answer to the task, addressed to the person who asked. Do not mention drafts, \
             critiques, plans or the household's members unless the task asks about them.",
        );
        let stream = self.cog.settings.load().orchestrator.stream_tokens;
        let t = self
            .think(&task.id, "ALFRED", request(prompt, None, stream))
            .await?;
        task.result = Some(t.response.content.clone());
        Ok(StepOut::from_thought(&t, &t.response.content, Node::Done))
    }
}

/// What a critique's words say about its score (see [`Verdict::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fewer than `min_critique_words` words: a score without a reason, acted on as consonant.
    Bare,
    /// A reason, and a different one from the previous critique's: something new to fix.
    New,
    /// The same reason as the previous critique (word-set overlap at or above `critique_repeat_similarity`):
    /// the redraft did not meet it.
    Same,
}

impl Verdict {
    /// Judges `critique` against the `previous` critique of the same task. Words are lower-cased and split at
    /// anything not alphanumeric; the overlap is Jaccard's (shared words / all words of the two). With
    /// `critique_repeat_similarity` at 1 the comparison is off and every critique with enough words is new.
    pub fn of(critique: &str, previous: Option<&str>, s: &OrchestratorSettings) -> Self {
        fn words(t: &str) -> std::collections::BTreeSet<String> {
            t.split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect()
        }
        let count = critique
            .split_whitespace()
            .filter(|w| w.chars().any(char::is_alphanumeric))
            .count();
        if count < s.min_critique_words {
            return Verdict::Bare;
        }
        let Some(prev) = previous else {
            return Verdict::New;
        };
        if s.critique_repeat_similarity >= 1.0 {
            return Verdict::New;
        }
        let (a, b) = (words(critique), words(prev));
        let union = a.union(&b).count();
        let overlap = if union == 0 {
            1.0
        } else {
            a.intersection(&b).count() as f64 / union as f64
        };
        if overlap >= s.critique_repeat_similarity {
            Verdict::Same
        } else {
            Verdict::New
        }
    }
}

/// The conditional edge after ROBIN's critique. Another round needs a new reason; a pause for the Architect
/// needs a reason that persisted — the same complaint after a redraft, or (with the comparison off) any
/// reasoned one after `max_iterations`. A bare score is acted on as consonant. So a small model that scores
/// 1.00 with a different complaint each time gets its rounds and then an answer, never a pause.
pub fn after_critique(task: &TaskState, s: &OrchestratorSettings, verdict: Verdict) -> Node {
    let d = task.dissonance.unwrap_or(0.0);
    let comparing = s.critique_repeat_similarity < 1.0;
    match verdict {
        Verdict::Bare => Node::Synthesize,
        Verdict::New if d > s.dissonance_threshold && task.iteration < s.max_iterations => {
            Node::Draft
        }
        Verdict::New if !comparing && d >= s.inquiry_threshold && task.inquiry.is_none() => {
            Node::Inquiry
        }
        Verdict::Same if d >= s.inquiry_threshold && task.inquiry.is_none() => Node::Inquiry,
        _ => Node::Synthesize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OrchestratorSettings {
        OrchestratorSettings {
            max_concurrent_tasks: 1,
            dissonance_threshold: 0.6,
            max_iterations: 3,
            inquiry_threshold: 0.9,
            max_tool_calls_per_step: 4,
            keep_finished_tasks: 10,
            max_task_bytes: 1000,
            max_steps: 32,
            stream_tokens: true,
            task_restarts: 1,
            persona_outwait_ms: 1000,
            persona_retry_backoff_ms: 10,
            persona_retry_backoff_max_ms: 100,
            research_max_bytes: 1600,
            min_critique_words: 4,
            critique_repeat_similarity: 0.6,
            settle_tries: 3,
            settle_retry_ms: 10,
            route: crate::settings::RouteMode::Full,
            direct_max_bytes: 240,
            direct_notes: 3,
            note_min_share: 0.5,
            direct_samples: 1,
        }
    }

    #[test]
    fn critique_edges() {
        let mut s = settings();
        let mut t = TaskState::new("t".into(), "x".into());
        t.iteration = 1;
        t.dissonance = Some(0.8);
        assert_eq!(after_critique(&t, &s, Verdict::New), Node::Draft);
        t.dissonance = Some(0.2);
        assert_eq!(after_critique(&t, &s, Verdict::New), Node::Synthesize);
        // A bare score never sends the draft back nor pauses.
        t.dissonance = Some(1.0);
        assert_eq!(after_critique(&t, &s, Verdict::Bare), Node::Synthesize);
        // The same complaint after a redraft: a pause above the inquiry threshold, an answer below it.
        t.iteration = 2;
        assert_eq!(after_critique(&t, &s, Verdict::Same), Node::Inquiry);
        t.dissonance = Some(0.7);
        assert_eq!(after_critique(&t, &s, Verdict::Same), Node::Synthesize);
        // A new complaint at the last round: an answer, not a pause.
        t.iteration = 3;
        t.dissonance = Some(0.95);
        assert_eq!(after_critique(&t, &s, Verdict::New), Node::Synthesize);
        // With the comparison off, any reasoned high score after the last round pauses (once).
        s.critique_repeat_similarity = 1.0;
        assert_eq!(after_critique(&t, &s, Verdict::New), Node::Inquiry);
        t.inquiry = Some(Inquiry::default());
        assert_eq!(after_critique(&t, &s, Verdict::New), Node::Synthesize);
    }

    #[test]
    fn a_critique_is_bare_new_or_the_same_again() {
        let mut s = settings();
        assert_eq!(Verdict::of("Not in harmony.", None, &s), Verdict::Bare);
        let first = "The draft never says why moths fly to light.";
        assert_eq!(Verdict::of(first, None, &s), Verdict::New);
        assert_eq!(
            Verdict::of(
                "The draft never says why moths fly to the light.",
                Some(first),
                &s
            ),
            Verdict::Same
        );
        assert_eq!(
            Verdict::of(
                "It confuses heat with brightness and cites no source.",
                Some(first),
                &s
            ),
            Verdict::New
        );
        s.critique_repeat_similarity = 1.0;
        assert_eq!(
            Verdict::of(first, Some(first), &s),
            Verdict::New,
            "comparison off"
        );
    }
}
