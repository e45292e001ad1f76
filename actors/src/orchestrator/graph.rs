//! The Socratic Contrapunto: nodes and conditional edges as code over a [`TaskState`].
//!
//! ```text
//! route (ALFRED) ──needs research──▶ research (BABS) ──▶ draft (BRICK, tools) ──▶ critique (ROBIN)
//!        └───────────────────────────────────────────────▲   │  ▲ capability gap        │
//!                                                        │   ▼  │                       │ dissonance > threshold
//!                                                        │ toolforge                    │ and iterations left
//!                                                        └──────────────────────────────┘
//! critique ──persistently ≥ inquiry threshold──▶ inquiry ──(pause: a human decides)──▶ synthesize (ALFRED)
//! critique ──otherwise──▶ synthesize ──▶ done
//! ```

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::{Cognition, Inquiry, Node, StepRecord, TaskState, TaskStatus, ToolUse};
use crate::events::Event;
use crate::llm::{ChatMessage, Role, ToolCall, ToolSpec};
use crate::personas::{PersonaMap, ProtoMsg, ThinkRequest, Thought};
use crate::protocol::truncate;
use crate::settings::OrchestratorSettings;
use crate::tools::{TaskCommand, ToolOutput};

/// Longest text a tool Command may set.
pub const MAX_COMMAND_TEXT: usize = 16 * 1024;
/// Longest step summary kept in events and the step history.
const SUMMARY_BYTES: usize = 240;

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

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Done or failed.
    Finished,
    /// Waiting for a human.
    Paused,
}

/// What one node did.
struct StepOut {
    persona: String,
    model: String,
    backend: String,
    dissonance: Option<f64>,
    summary: String,
    next: Node,
}

impl StepOut {
    fn from_thought(t: &Thought, summary: &str, next: Node) -> Self {
        StepOut {
            persona: t.persona.clone(),
            model: t.model.clone(),
            backend: t.backend.to_string(),
            dissonance: None,
            summary: truncate(summary.trim(), SUMMARY_BYTES).to_string(),
            next,
        }
    }
}

/// Runs one task through the graph with one persona snapshot.
pub struct Runner {
    cog: Arc<Cognition>,
    personas: Arc<PersonaMap>,
}

impl Runner {
    /// A runner over `personas`, the registry snapshot this task holds for its whole life.
    pub fn new(cog: Arc<Cognition>, personas: Arc<PersonaMap>) -> Self {
        Self { cog, personas }
    }

    /// Runs from `task.next` until the task finishes or pauses. After every step the state is checkpointed
    /// and handed to `on_step`.
    pub async fn run(
        &mut self,
        task: &mut TaskState,
        mut on_step: impl FnMut(&TaskState),
    ) -> RunEnd {
        task.status = TaskStatus::Running;
        self.cog.hub.publish(Event::TaskStatus {
            id: task.id.clone(),
            status: "running".into(),
        });
        self.checkpoint(task);
        loop {
            let settings = self.cog.settings.load().orchestrator.clone();
            let node = task.next;
            match node {
                Node::Done => return self.finish(task, Ok(())),
                Node::AwaitDecision => {
                    task.status = TaskStatus::Paused;
                    self.checkpoint(task);
                    return RunEnd::Paused;
                }
                _ => {}
            }
            if task.steps.len() as u32 >= settings.max_steps {
                let e = format!(
                    "the task exceeded orchestrator.max_steps ({})",
                    settings.max_steps
                );
                return self.finish(task, Err(e));
            }
            let started = Instant::now();
            let out = match node {
                Node::Route => self.route(task).await,
                Node::Research => self.research(task).await,
                Node::Draft => self.draft(task, &settings).await,
                Node::Critique => self.critique(task, &settings).await,
                Node::ToolForge => self.toolforge(task).await,
                Node::Inquiry => self.inquiry(task).await,
                Node::Synthesize => self.synthesize(task).await,
                Node::AwaitDecision | Node::Done => unreachable!("handled above"),
            };
            let out = match out {
                Ok(o) => o,
                Err(e) => return self.finish(task, Err(format!("{node} step failed: {e}"))),
            };
            let record = StepRecord {
                step: task.steps.len() as u32 + 1,
                node,
                persona: out.persona.clone(),
                model: out.model.clone(),
                backend: out.backend.clone(),
                dissonance: out.dissonance,
                duration_ms: started.elapsed().as_millis() as u64,
                summary: out.summary.clone(),
            };
            task.steps.push(record.clone());
            task.next = out.next;
            // Durable before visible: a client that saw task.step can rely on it surviving a crash.
            self.checkpoint(task);
            tracing::info!(event = "task.step", task = %task.id, step = record.step, node = %node, persona = %record.persona,
                model = %record.model, dissonance = ?record.dissonance, duration_ms = record.duration_ms, "task step");
            self.cog.hub.publish(Event::TaskStep {
                id: task.id.clone(),
                step: record.step,
                node: node.to_string(),
                persona: record.persona,
                model: record.model,
                backend: record.backend,
                dissonance: record.dissonance,
                duration_ms: record.duration_ms,
                summary: record.summary,
            });
            if node == Node::Inquiry {
                self.cog.hub.publish(Event::TaskPaused {
                    id: task.id.clone(),
                    reason: task
                        .inquiry
                        .as_ref()
                        .map(|i| i.reason.clone())
                        .unwrap_or_default(),
                });
            }
            on_step(task);
        }
    }

    fn checkpoint(&self, task: &TaskState) {
        if let Err(e) = self.cog.store.save(task) {
            tracing::error!(event = "checkpoint.write_failed", task = %task.id, error = %e, "checkpoint not written");
        }
    }

    fn finish(&self, task: &mut TaskState, result: Result<(), String>) -> RunEnd {
        match result {
            Ok(()) => {
                task.status = TaskStatus::Done;
                task.next = Node::Done;
                self.checkpoint(task);
                tracing::info!(event = "task.done", task = %task.id, steps = task.steps.len(), "task done");
                self.cog.hub.publish(Event::TaskDone {
                    id: task.id.clone(),
                    result: task.result.clone().unwrap_or_default(),
                });
                if let Some(memory) = self.cog.memory.clone() {
                    let t = task.clone();
                    tokio::spawn(async move {
                        if let Err(e) = memory.ingest(&t).await {
                            tracing::warn!(event = "memory.ingest_failed", task = %t.id, error = %e, "task not stored in memory");
                        }
                    });
                }
            }
            Err(e) => {
                task.status = TaskStatus::Failed;
                task.error = Some(e.clone());
                self.checkpoint(task);
                tracing::warn!(event = "task.failed", task = %task.id, error = %e, "task failed");
                self.cog.hub.publish(Event::TaskFailed {
                    id: task.id.clone(),
                    error: e,
                });
            }
        }
        RunEnd::Finished
    }

    /// One model call by `persona`, through the task's registry snapshot. If that actor died (crash and
    /// restart) the current actor is used instead, but only when it thinks with the same model, so a task
    /// never mixes models.
    async fn think(
        &mut self,
        task_id: &str,
        persona: &str,
        req: ThinkRequest,
    ) -> Result<Thought, String> {
        let handle = self
            .personas
            .get(persona)
            .cloned()
            .ok_or_else(|| format!("no persona {persona} in the registry"))?;
        let timeout = self.cog.personas.call_timeout();
        let stream = req.tokens.is_some();
        let mut req = req;
        if stream {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            req.tokens = Some(tx);
            let hub = self.cog.hub.clone();
            let (id, p) = (task_id.to_string(), persona.to_string());
            tokio::spawn(async move {
                while let Some(text) = rx.recv().await {
                    hub.publish(Event::TaskToken {
                        id: id.clone(),
                        persona: p.clone(),
                        text,
                    });
                }
            });
        }
        let first = handle
            .actor
            .call(|r| ProtoMsg::Think(Box::new(req.clone()), r), Some(timeout))
            .await;
        let answer = match first {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            Ok(_) => {
                return Err(format!(
                    "{persona} did not answer within {} ms",
                    timeout.as_millis()
                ))
            }
            Err(_) => {
                let current = self
                    .cog
                    .personas
                    .current(persona)
                    .map_err(|e| e.to_string())?;
                if current.model != handle.model {
                    return Err(format!(
                        "{persona}'s actor for model {} is gone and the persona now uses {}",
                        handle.model, current.model
                    ));
                }
                Arc::make_mut(&mut self.personas).insert(persona.to_string(), current.clone());
                match current
                    .actor
                    .call(|r| ProtoMsg::Think(Box::new(req), r), Some(timeout))
                    .await
                {
                    Ok(ractor::rpc::CallResult::Success(r)) => r,
                    _ => return Err(format!("{persona} is not available")),
                }
            }
        };
        answer.map_err(|e| format!("{persona} could not think: {e}"))
    }

    fn brief(task: &TaskState) -> String {
        let mut s = format!("Task from the Architect:\n{}\n", task.text);
        if let Some(plan) = &task.plan {
            s.push_str(&format!("\nALFRED's plan:\n{plan}\n"));
        }
        if let Some(ctx) = &task.context {
            s.push_str(&format!("\nBABS's research notes:\n{ctx}\n"));
        }
        if !task.notes.is_empty() {
            s.push_str("\nNotes:\n");
            for n in &task.notes {
                s.push_str(&format!("- {n}\n"));
            }
        }
        if let Some(g) = task.inquiry.as_ref().and_then(|i| i.guidance.as_ref()) {
            s.push_str(&format!("\nThe Architect's guidance:\n{g}\n"));
        }
        s
    }

    async fn route(&mut self, task: &mut TaskState) -> Result<StepOut, String> {
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
        // BABS joins when ALFRED asks for research, or when memory holds something relevant to the task.
        if let Some(memory) = &self.cog.memory {
            match memory.retrieve(&task.text).await {
                Ok(notes) => task.memories = notes,
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

    async fn research(&mut self, task: &mut TaskState) -> Result<StepOut, String> {
        let memories = task.memories.clone();
        let mut prompt = Self::brief(task);
        if memories.is_empty() {
            prompt.push_str("\nNo memories match this task.\n");
        } else {
            prompt.push_str("\nMemories that may be relevant:\n");
            for m in &memories {
                prompt.push_str(&format!("- {m}\n"));
            }
        }
        prompt.push_str("\nWrite short research notes for BRICK, each with its source.");
        let t = self
            .think(&task.id, "BABS", request(prompt, None, false))
            .await?;
        task.context = Some(t.response.content.clone());
        Ok(StepOut::from_thought(&t, &t.response.content, Node::Draft))
    }

    async fn draft(
        &mut self,
        task: &mut TaskState,
        s: &OrchestratorSettings,
    ) -> Result<StepOut, String> {
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

    /// Executes one tool call; returns the tool message for the model and a route change from a Command.
    async fn run_tool(&mut self, task: &mut TaskState, call: &ToolCall) -> (String, Option<Node>) {
        let Some(tool) = self.cog.tools.get(&call.name) else {
            let msg = format!("tool error: no tool named `{}`", call.name);
            task.tools_used.push(ToolUse {
                name: call.name.clone(),
                arguments: call.arguments.clone(),
                result: msg.clone(),
                ok: false,
            });
            return (msg, None);
        };
        // Some models send arguments as a JSON string; accept both.
        let args = match &call.arguments {
            Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
            v => v.clone(),
        };
        let (msg, ok, jump) = match tool.call(args).await {
            Ok(ToolOutput::Value(v)) => (v.to_string(), true, None),
            Ok(ToolOutput::Command(cmd)) => match apply_command(task, &cmd) {
                Ok(jump) => (
                    format!(
                        "command applied: {}",
                        serde_json::to_string(&cmd).unwrap_or_default()
                    ),
                    true,
                    jump,
                ),
                Err(e) => (format!("tool error: invalid command: {e}"), false, None),
            },
            Err(e) => (format!("tool error: {e}"), false, None),
        };
        tracing::info!(event = "tool.called", task = %task.id, tool = %call.name, ok, "tool call");
        task.tools_used.push(ToolUse {
            name: call.name.clone(),
            arguments: call.arguments.clone(),
            result: truncate(&msg, MAX_COMMAND_TEXT).to_string(),
            ok,
        });
        (msg, jump)
    }

    async fn critique(
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
        task.dissonance = Some(d);
        task.critiques.push(critique.clone());
        let next = after_critique(task, s);
        let mut out = StepOut::from_thought(&t, &critique, next);
        out.dissonance = Some(d);
        Ok(out)
    }

    async fn toolforge(&mut self, task: &mut TaskState) -> Result<StepOut, String> {
        let gap = task.capability_gap.take().unwrap_or_default();
        let (summary, model) = match &self.cog.forge {
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
        })
    }

    async fn inquiry(&mut self, task: &mut TaskState) -> Result<StepOut, String> {
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
        })
    }

    async fn synthesize(&mut self, task: &mut TaskState) -> Result<StepOut, String> {
        let mut prompt = Self::brief(task);
        if let Some(d) = task.drafts.last() {
            prompt.push_str(&format!("\nBRICK's final draft:\n{d}\n"));
        }
        if let Some(c) = task.critiques.last() {
            prompt.push_str(&format!("\nROBIN's last critique:\n{c}\n"));
        }
        prompt.push_str("\nWrite the answer for the Architect.");
        let stream = self.cog.settings.load().orchestrator.stream_tokens;
        let t = self
            .think(&task.id, "ALFRED", request(prompt, None, stream))
            .await?;
        task.result = Some(t.response.content.clone());
        Ok(StepOut::from_thought(&t, &t.response.content, Node::Done))
    }
}

fn request(prompt: String, format: Option<Value>, stream: bool) -> ThinkRequest {
    let (tx, _) = tokio::sync::mpsc::unbounded_channel();
    ThinkRequest {
        messages: if prompt.is_empty() {
            Vec::new()
        } else {
            vec![ChatMessage::new(Role::User, prompt)]
        },
        tools: Vec::new(),
        format,
        // A placeholder sender marks "stream this"; `think` replaces it with one wired to the event bus.
        tokens: stream.then_some(tx),
    }
}

/// The conditional edge after ROBIN's critique.
pub fn after_critique(task: &TaskState, s: &OrchestratorSettings) -> Node {
    let d = task.dissonance.unwrap_or(0.0);
    if d > s.dissonance_threshold && task.iteration < s.max_iterations {
        Node::Draft
    } else if d >= s.inquiry_threshold && task.inquiry.is_none() {
        Node::Inquiry
    } else {
        Node::Synthesize
    }
}

/// Validates a tool's Command and applies it to the task, all or nothing.
pub fn apply_command(task: &mut TaskState, cmd: &TaskCommand) -> Result<Option<Node>, String> {
    let goto = match &cmd.goto {
        None => None,
        Some(name) => Some(Node::goto_target(name).ok_or_else(|| {
            format!(
                "`goto` must be one of draft, critique, toolforge, inquiry, synthesize (got `{}`)",
                truncate(name, 64)
            )
        })?),
    };
    for (k, v) in &cmd.update {
        match k.as_str() {
            "dissonance" => match v.as_f64() {
                Some(d) if (0.0..=1.0).contains(&d) => {}
                _ => {
                    return Err(format!(
                        "`dissonance` must be a number in 0..=1 (got {})",
                        truncate(&v.to_string(), 64)
                    ))
                }
            },
            "plan" | "context" | "capability_gap" | "note" => match v.as_str() {
                Some(s) if s.len() <= MAX_COMMAND_TEXT => {}
                _ => {
                    return Err(format!(
                        "`{k}` must be a string of at most {MAX_COMMAND_TEXT} bytes"
                    ))
                }
            },
            other => {
                return Err(format!(
                "cannot update `{}`; updatable: dissonance, plan, context, capability_gap, note",
                truncate(other, 64)
            ))
            }
        }
    }
    for (k, v) in &cmd.update {
        match k.as_str() {
            "dissonance" => task.dissonance = v.as_f64(),
            "plan" => task.plan = v.as_str().map(str::to_string),
            "context" => task.context = v.as_str().map(str::to_string),
            "capability_gap" => task.capability_gap = v.as_str().map(str::to_string),
            "note" => task.notes.extend(v.as_str().map(str::to_string)),
            _ => {}
        }
    }
    Ok(goto)
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
        }
    }

    #[test]
    fn critique_edges() {
        let s = settings();
        let mut t = TaskState::new("t".into(), "x".into());
        t.iteration = 1;
        t.dissonance = Some(0.8);
        assert_eq!(after_critique(&t, &s), Node::Draft);
        t.dissonance = Some(0.2);
        assert_eq!(after_critique(&t, &s), Node::Synthesize);
        t.iteration = 3;
        t.dissonance = Some(0.95);
        assert_eq!(after_critique(&t, &s), Node::Inquiry);
        t.inquiry = Some(Inquiry::default());
        assert_eq!(after_critique(&t, &s), Node::Synthesize);
        t.dissonance = Some(0.7);
        t.inquiry = None;
        assert_eq!(after_critique(&t, &s), Node::Synthesize);
    }

    #[test]
    fn commands_are_all_or_nothing() {
        let mut t = TaskState::new("t".into(), "x".into());
        let mut update = serde_json::Map::new();
        update.insert("dissonance".into(), json!(0.7));
        update.insert("bogus".into(), json!(1));
        let bad = TaskCommand { update, goto: None };
        assert!(apply_command(&mut t, &bad).unwrap_err().contains("bogus"));
        assert_eq!(t.dissonance, None);
        let mut update = serde_json::Map::new();
        update.insert("dissonance".into(), json!(7));
        assert!(apply_command(&mut t, &TaskCommand { update, goto: None }).is_err());
        let mut update = serde_json::Map::new();
        update.insert("dissonance".into(), json!(0.7));
        let ok = TaskCommand {
            update,
            goto: Some("inquiry".into()),
        };
        assert_eq!(apply_command(&mut t, &ok).unwrap(), Some(Node::Inquiry));
        assert_eq!(t.dissonance, Some(0.7));
        let jump = TaskCommand {
            update: Default::default(),
            goto: Some("../etc".into()),
        };
        assert!(apply_command(&mut t, &jump).is_err());
    }
}
