//! The Proto actor: one persona thinking with one model.

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::PersonaConfig;
use crate::events::{Event, EventHub};
use crate::job::Jobs;
use crate::llm::{
    ChatMessage, ChatRequest, LlmBackend, LlmError, Role, Sampling, SamplingOverrides,
};
use crate::ports::think::{ThinkRequest, Thought};
use crate::principles::PersonaCodex;

/// The persona state a human may edit live ("cognitive surgery"); every field overrides a default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Editable {
    /// Sampling temperature, 0..=2 (0 = greedy); `None` uses `[llm] temperature`.
    pub temperature: Option<f32>,
    /// Nucleus mass, 0..=1; `None` uses `[llm] top_p`.
    pub top_p: Option<f32>,
    /// Longest answer in tokens (1..=32768).
    pub max_tokens: Option<u32>,
    /// Appended to the persona's system message.
    pub extra_instructions: Option<String>,
}

/// The fields `update_persona` accepts.
pub const EDITABLE_FIELDS: &[&str] = &["temperature", "top_p", "max_tokens", "extra_instructions"];
/// Longest accepted `extra_instructions`.
pub const MAX_INSTRUCTIONS_BYTES: usize = 8 * 1024;

impl Editable {
    /// Sets one field from a JSON value (null clears it), validating type and range.
    pub fn set(&mut self, field: &str, value: &Value) -> Result<(), String> {
        let number = |lo: f64, hi: f64| -> Result<Option<f64>, String> {
            match value {
                Value::Null => Ok(None),
                Value::Number(n) => match n.as_f64() {
                    Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
                    _ => Err(format!("`{field}` must be a number in {lo}..={hi}")),
                },
                _ => Err(format!("`{field}` must be a number or null")),
            }
        };
        match field {
            "temperature" => self.temperature = number(0.0, 2.0)?.map(|x| x as f32),
            "top_p" => self.top_p = number(0.0, 1.0)?.map(|x| x as f32),
            "max_tokens" => {
                self.max_tokens = match value {
                    Value::Null => None,
                    v => match v.as_u64() {
                        Some(n) if (1..=32768).contains(&n) => Some(n as u32),
                        _ => return Err("`max_tokens` must be an integer in 1..=32768".into()),
                    },
                }
            }
            "extra_instructions" => {
                self.extra_instructions = match value {
                    Value::Null => None,
                    Value::String(s) if s.len() <= MAX_INSTRUCTIONS_BYTES => Some(s.clone()),
                    Value::String(_) => {
                        return Err(format!(
                            "`extra_instructions` is longer than {MAX_INSTRUCTIONS_BYTES} bytes"
                        ))
                    }
                    _ => return Err("`extra_instructions` must be a string or null".into()),
                }
            }
            other => {
                return Err(format!(
                    "`{other}` is not an editable field; editable: {}",
                    EDITABLE_FIELDS.join(", ")
                ))
            }
        }
        Ok(())
    }

    /// The editable state as JSON, with the actor generation.
    pub fn to_value(&self, generation: u64) -> Value {
        json!({
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "extra_instructions": self.extra_instructions,
            "generation": generation,
        })
    }

    /// The sampling these edits change, as the one overrides type: applied over the persona's settings.
    pub fn overrides(&self) -> SamplingOverrides {
        SamplingOverrides {
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens: self.max_tokens,
            ..SamplingOverrides::default()
        }
    }
}

/// A Proto persona actor.
#[derive(Debug, Default, Clone, Copy)]
pub struct Proto;

/// Start-up arguments.
pub struct ProtoArgs {
    /// Name, model, codex, surgery.
    pub config: PersonaConfig,
    /// This actor's generation: the next value of the counter shared by all personas.
    pub generation: u64,
    /// Backend to think through.
    pub backend: Arc<dyn LlmBackend>,
    /// Sampling defaults from `[llm]`, under the editable overrides; replaced live by `SetSampling`.
    pub sampling: Sampling,
    /// Event bus.
    pub hub: Arc<EventHub>,
}

/// Messages a Proto actor handles.
#[derive(ractor_cluster::RactorMessage)]
pub enum ProtoMsg {
    /// Make one model call.
    Think(Box<ThinkRequest>, RpcReplyPort<Result<Thought, LlmError>>),
    /// Live state as JSON.
    GetState(RpcReplyPort<Value>),
    /// Replace the editable state (surgery); answers the new state.
    SetEditable(Editable, RpcReplyPort<Value>),
    /// New codex entry (hot reload).
    SetCodex(PersonaCodex),
    /// New sampling defaults (settings reload).
    SetSampling(Sampling),
    /// Fault injection: panic.
    Crash,
}

/// Proto state.
pub struct ProtoState {
    config: PersonaConfig,
    generation: u64,
    backend: Arc<dyn LlmBackend>,
    sampling: Sampling,
    hub: Arc<EventHub>,
    system: String,
    calls: u64,
    jobs: Jobs,
}

impl ProtoState {
    fn system_message(codex: &PersonaCodex, editable: &Editable) -> String {
        let mut s = codex.system_message();
        if let Some(extra) = &editable.extra_instructions {
            s.push_str("\n\n");
            s.push_str(extra);
        }
        s
    }

    fn state_value(&self) -> Value {
        let mut v = self.config.editable.to_value(self.generation);
        if let Value::Object(m) = &mut v {
            m.insert("persona".into(), json!(self.config.name));
            m.insert("model".into(), json!(self.config.model));
            m.insert("backend".into(), json!(self.backend.kind().to_string()));
            m.insert("role".into(), json!(self.config.codex.role));
            m.insert("calls".into(), json!(self.calls));
            m.insert("system_prompt".into(), json!(self.system));
        }
        v
    }

    fn publish_state(&self) {
        self.hub.publish(Event::PersonaState {
            persona: self.config.name.clone(),
            model: self.config.model.clone(),
            backend: self.backend.kind().to_string(),
            state: self.config.editable.to_value(self.generation),
        });
    }
}

impl Actor for Proto {
    type Msg = ProtoMsg;
    type State = ProtoState;
    type Arguments = ProtoArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ProtoMsg>,
        args: ProtoArgs,
    ) -> Result<ProtoState, ActorProcessingErr> {
        let system = ProtoState::system_message(&args.config.codex, &args.config.editable);
        let jobs = Jobs::new(
            format!("root/personas/{}", args.config.name),
            args.hub.clone(),
        );
        Ok(ProtoState {
            jobs,
            config: args.config,
            generation: args.generation,
            backend: args.backend,
            sampling: args.sampling,
            hub: args.hub,
            system,
            calls: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ProtoMsg>,
        msg: ProtoMsg,
        state: &mut ProtoState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProtoMsg::Think(req, reply) => {
                state.calls += 1;
                let ThinkRequest {
                    messages: conversation,
                    tools,
                    format,
                    tokens,
                    sample,
                } = *req;
                let mut messages = Vec::with_capacity(conversation.len() + 1);
                let system = state.system.clone();
                messages.push(ChatMessage::new(Role::System, system.clone()));
                messages.extend(conversation);
                let mut sampling = state.config.editable.overrides().apply(state.sampling);
                sampling.seed = sampling.seed.wrapping_add_unsigned(sample);
                let chat = ChatRequest {
                    model: state.config.model.clone(),
                    messages,
                    tools,
                    format,
                    sampling,
                };
                let backend = state.backend.clone();
                let (persona, model, generation) = (
                    state.config.name.clone(),
                    state.config.model.clone(),
                    state.generation,
                );
                // The call runs beside the mailbox so one slow answer never blocks the persona's other tasks;
                // as a supervised job, so a panic in the backend is an `actor.failed` event and the caller's
                // reply port dies at once (the persona itself lives on).
                let work = async move {
                    let started = Instant::now();
                    let kind = backend.kind();
                    let result = backend.chat(chat, tokens).await.map(|response| Thought {
                        response,
                        persona,
                        model,
                        backend: kind,
                        generation,
                        duration_ms: started.elapsed().as_millis() as u64,
                        system,
                    });
                    let _ = reply.send(result);
                };
                state.jobs.spawn(&myself.get_cell(), "think", work).await?;
            }
            ProtoMsg::GetState(reply) => {
                let _ = reply.send(state.state_value());
            }
            ProtoMsg::SetEditable(editable, reply) => {
                state.config.editable = editable;
                state.system =
                    ProtoState::system_message(&state.config.codex, &state.config.editable);
                state.publish_state();
                let _ = reply.send(state.state_value());
            }
            ProtoMsg::SetCodex(codex) => {
                state.config.codex = codex;
                state.system =
                    ProtoState::system_message(&state.config.codex, &state.config.editable);
                state.publish_state();
            }
            ProtoMsg::SetSampling(s) => state.sampling = s,
            ProtoMsg::Crash => panic!("debug_crash requested for persona {}", state.config.name),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<ProtoMsg>,
        event: SupervisionEvent,
        state: &mut ProtoState,
    ) -> Result<(), ActorProcessingErr> {
        state.jobs.supervise(&event);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surgery_validates_fields() {
        let mut e = Editable::default();
        e.set("temperature", &json!(0.3)).unwrap();
        assert_eq!(e.temperature, Some(0.3));
        assert!(e.set("temperature", &json!(5)).is_err());
        assert!(e.set("temperature", &json!("hot")).is_err());
        assert!(e.set("mood", &json!(1)).unwrap_err().contains("editable"));
        e.set("temperature", &Value::Null).unwrap();
        assert_eq!(e.temperature, None);
        e.set("extra_instructions", &json!("be brief")).unwrap();
        assert!(e.set("max_tokens", &json!(0)).is_err());
    }
}
