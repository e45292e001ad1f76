//! The embedded backend: llama.cpp in process through `llama-cpp-2`.
//!
//! One GGUF model is loaded once and shared by every persona that uses it. Inference runs on one dedicated OS
//! thread with one llama context, never on the async runtime: a batched decoder serves up to `parallel`
//! requests at once (one `llama_decode` per step across all of them, so two cores are shared rather than
//! oversubscribed) and reuses the KV cache of recent prompt prefixes, so a persona's principles are
//! prefilled once rather than on every call. Structured output is reliable even on a tiny model: a JSON schema is compiled to a llama.cpp
//! grammar, so the sampler can only produce text that parses. Tool calling works the same way: the model is
//! shown the tools and answers through a grammar-constrained JSON choice (answer, or call one tool with
//! arguments matching its schema). LoRA adapters are loaded on the same base model and selected per request,
//! so a cognitive atomic swap can move a persona to a new adapter without loading the base again.
//!
//! The module is split by job:
//!
//! - this file: [`EmbeddedBackend`], its model and adapter bookkeeping, prompt rendering, and its
//!   [`LlmBackend`] impl (which turns a request into a job and the job's output into a response);
//! - `model_file`: [`verify_model_file`] and [`ModelFileError`], the checks made before llama.cpp sees a
//!   file;
//! - `grammar`: JSON schema → llama.cpp grammar, the tool-or-answer choice schema and its preamble, and the
//!   fix-ups around grammar-constrained answers (string bounding, number clamping);
//! - `worker`: the inference thread, the job queue that feeds it, and the whole-job llama.cpp calls
//!   (embeddings, next-token logits, sequence likelihoods, adapter switching);
//! - `decoder`: the batched decoder (continuous batching, per-sequence sampling, adapters by group);
//! - `requant`: the 8-bit copy of a `Q4_1` model that llama.cpp serves instead (`serve_weights = "q8_0"`);
//! - `prefix`: the prompt-prefix cache's policy (longest shared prefix, LRU, bounded by tokens and entries);
//! - `sampler`: the per-request sampler chain (grammar, penalties, DRY, top-k/p, min-p, temperature).

mod decoder;
mod grammar;
pub mod guard;
mod model_file;
mod prefix;
mod requant;
mod sampler;
mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use async_trait::async_trait;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaLoraAdapter, LlamaModel};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::{
    BackendKind, ChatMessage, ChatRequest, ChatResponse, LlmBackend, LlmError, ModelSpec, Role,
    TokenSink, ToolCall, ToolSpec,
};
use crate::settings::{EmbeddedSettings, ServeWeights};
use decoder::ChatJob;
use grammar::{compile_grammar, tool_preamble};
use worker::{Job, Shared};

pub use grammar::{bound_strings, clamp_numbers, tool_choice_schema};
pub use model_file::{file_sha256, verify_model_file, ModelFileError};

/// Prefix of a model spec naming an adapter file directly: `lora:/path/to/adapter.gguf`.
pub const LORA_PREFIX: &str = "lora:";
/// Token budget of a grammar-constrained answer, as a multiple of `max_tokens` plus a fixed allowance.
const STRUCTURED_BUDGET_FACTOR: u32 = 3;
const STRUCTURED_BUDGET_EXTRA: u32 = 64;

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

fn backend() -> Result<&'static LlamaBackend, LlmError> {
    BACKEND
        .get_or_init(|| LlamaBackend::init().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| LlmError::Backend(format!("llama.cpp backend init failed: {e}")))
}

/// The file llama.cpp should load for `s` (the model is already verified): its 8-bit copy when
/// `serve_weights` asks for one and the model has `Q4_1` weights, else the model itself — also when the copy
/// cannot be made, which is a warning, not a failure.
fn serving_file(s: &EmbeddedSettings) -> PathBuf {
    if s.serve_weights != ServeWeights::Q8_0 {
        return s.model_path.clone();
    }
    let started = std::time::Instant::now();
    let made = if s.model_sha256.is_empty() {
        model_file::file_sha256(&s.model_path).map_err(requant::RequantError::from)
    } else {
        Ok(s.model_sha256.clone())
    }
    .and_then(|sha| requant::serving_copy(&s.model_path, &sha));
    match made {
        Ok(Some(copy)) => {
            tracing::info!(event = "llm.serving_copy", model = %s.model_path.display(), copy = %copy.display(), ms = started.elapsed().as_millis() as u64, "serving the model's 8-bit copy");
            copy
        }
        Ok(None) => s.model_path.clone(),
        Err(e) => {
            tracing::warn!(event = "llm.serving_copy_failed", model = %s.model_path.display(), error = %e, "no 8-bit copy; serving the model as it is");
            s.model_path.clone()
        }
    }
}

/// The weights a trainer trains on for `s` without loading llama.cpp (a worker serving `train`): the model
/// file, verified against `s.model_sha256`, or its 8-bit copy — the same file `EmbeddedBackend::serving_path`
/// names for the same settings.
pub fn training_weights(s: &EmbeddedSettings) -> Result<PathBuf, LlmError> {
    verify_model_file(&s.model_path, &s.model_sha256)
        .map_err(|e| LlmError::Backend(e.to_string()))?;
    Ok(serving_file(s))
}

/// The in-process llama.cpp backend.
pub struct EmbeddedBackend {
    shared: Arc<Shared>,
    jobs: crossbeam_channel::Sender<Job>,
    path: PathBuf,
    /// The file llama.cpp loaded: `path`, or its 8-bit copy (see [`requant`]).
    serving: PathBuf,
    /// The model name personas use for the plain base model.
    base_name: String,
    /// Adapters by file path.
    adapters: Mutex<HashMap<PathBuf, Arc<Mutex<LlamaLoraAdapter>>>>,
    /// One adapter load at a time: a load makes the inference thread step aside, dropping its context and the
    /// prefix cache with it, so a second first use of the same adapter waits for the first rather than load it
    /// (and drop the cache) again.
    loading: tokio::sync::Mutex<()>,
    /// Named models made by `create_model`: name → adapter file.
    named: Mutex<HashMap<String, PathBuf>>,
    template: LlamaChatTemplate,
    n_embd: usize,
}

impl std::fmt::Debug for EmbeddedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBackend")
            .field("path", &self.path)
            .finish()
    }
}

impl EmbeddedBackend {
    /// Verifies and loads the model, then starts the inference thread. `base_name` is the model name that
    /// means "the base model" (e.g. the personas' default model in settings).
    pub fn load(s: &EmbeddedSettings, base_name: &str) -> Result<Self, LlmError> {
        verify_model_file(&s.model_path, &s.model_sha256)
            .map_err(|e| LlmError::Backend(e.to_string()))?;
        llama_cpp_2::send_logs_to_tracing(
            llama_cpp_2::LogOptions::default().with_logs_enabled(s.native_logs),
        );
        let serving = serving_file(s);
        let b = backend()?;
        let model =
            LlamaModel::load_from_file(b, &serving, &LlamaModelParams::default()).map_err(|e| {
                LlmError::Backend(
                    ModelFileError {
                        path: serving.display().to_string(),
                        problem: format!("llama.cpp could not load it ({e})"),
                    }
                    .to_string(),
                )
            })?;
        let template = model
            .chat_template(None)
            .ok()
            .or_else(|| LlamaChatTemplate::new("chatml").ok())
            .ok_or_else(|| LlmError::Backend("no usable chat template".into()))?;
        let n_embd = usize::try_from(model.n_embd()).unwrap_or(0);
        let threads = if s.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get() as i32)
                .unwrap_or(1)
        } else {
            s.threads as i32
        };
        let shared = Arc::new(Shared {
            model: RwLock::new(model),
            writers: AtomicUsize::new(0),
            n_ctx: s.n_ctx,
            n_batch: s.n_batch,
            threads,
            parallel: s.parallel.max(1),
            prefix_cache: s.prefix_cache,
            prefix_cache_tokens: s.prefix_cache_tokens,
            prefix_cache_entries: s.prefix_cache_entries,
            prefix_min_tokens: s.prefix_min_tokens,
            batch_invariant: s.batch_invariant,
        });
        let tx = worker::start(&shared, s.max_queued)?;
        tracing::info!(event = "llm.embedded_loaded", path = %s.model_path.display(), serving = %serving.display(), n_embd, threads, parallel = s.parallel, prefix_cache = s.prefix_cache, "embedded model loaded");
        Ok(Self {
            shared,
            jobs: tx,
            path: s.model_path.clone(),
            serving,
            base_name: base_name.to_string(),
            adapters: Mutex::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
            named: Mutex::new(HashMap::new()),
            template,
            n_embd,
        })
    }

    /// The GGUF file llama.cpp serves: the model file, or its 8-bit copy (`serve_weights = "q8_0"`).
    pub fn serving_path(&self) -> &Path {
        &self.serving
    }

    /// Embedding width.
    pub fn n_embd(&self) -> usize {
        self.n_embd
    }

    /// Which adapter (if any) a model name means.
    fn resolve(&self, model: &str) -> Result<Option<PathBuf>, LlmError> {
        if let Some(path) = model.strip_prefix(LORA_PREFIX) {
            return Ok(Some(PathBuf::from(path)));
        }
        if let Some(p) = self
            .named
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(model)
        {
            return Ok(Some(p.clone()));
        }
        if model == self.base_name || model.is_empty() {
            return Ok(None);
        }
        Err(LlmError::ModelNotFound {
            model: model.to_string(),
            detail: format!(
                "the embedded backend serves `{}` (the base model), `{LORA_PREFIX}<adapter.gguf>`, and models made with create_model",
                self.base_name
            ),
        })
    }

    /// Loads an adapter once (needs the model exclusively, so the inference thread finishes what it serves and steps aside).
    async fn adapter(&self, path: &Path) -> Result<Arc<Mutex<LlamaLoraAdapter>>, LlmError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let loaded = || {
            self.adapters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&path)
                .cloned()
        };
        if let Some(a) = loaded() {
            return Ok(a);
        }
        let _one = self.loading.lock().await;
        if let Some(a) = loaded() {
            return Ok(a);
        }
        if !path.is_file() {
            return Err(LlmError::ModelNotFound {
                model: format!("{LORA_PREFIX}{}", path.display()),
                detail: "adapter file not found".into(),
            });
        }
        let shared = self.shared.clone();
        let p = path.clone();
        let adapter = tokio::task::spawn_blocking(move || {
            shared.writers.fetch_add(1, Ordering::SeqCst);
            let r = {
                let mut model = shared.model.write().unwrap_or_else(|p| p.into_inner());
                model.lora_adapter_init(&p)
            };
            shared.writers.fetch_sub(1, Ordering::SeqCst);
            r
        })
        .await
        .map_err(|e| LlmError::Backend(e.to_string()))?
        .map_err(|e| {
            LlmError::InvalidRequest(format!(
                "cannot load LoRA adapter {}: {e} (wrong architecture or shapes?)",
                path.display()
            ))
        })?;
        // Loads are one at a time (`loading`), so this entry is new; kept as a guard all the same: an adapter has
        // one identity (the decoder groups requests and keys cached prefixes by it).
        let adapter = self
            .adapters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(path.clone())
            .or_insert_with(|| Arc::new(Mutex::new(adapter)))
            .clone();
        tracing::info!(event = "llm.adapter_loaded", path = %path.display(), "LoRA adapter loaded");
        Ok(adapter)
    }

    fn render(
        &self,
        messages: &[ChatMessage],
        tool_preamble: Option<&str>,
    ) -> Result<String, LlmError> {
        self.render_chat(messages, tool_preamble, true)
    }

    /// Token ids of `text` as a prompt is tokenized for inference (with the BOS token, special tokens parsed).
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        let model = self.shared.model.read().unwrap_or_else(|p| p.into_inner());
        model
            .vocab()
            .tokenize(text.as_bytes(), true, true)
            .into_iter()
            .map(|t| t.0 as u32)
            .collect()
    }

    /// A chat exchange as the serving engine sees it, for training on exactly those tokens: the token ids of
    /// `messages` followed by the assistant's `answer` (rendered with the model's own chat template, end of
    /// turn included), and how many of them are the prompt (the answer is what follows). With `tools` the
    /// prompt carries their preamble and the answer is the JSON answer object, as [`chat`](LlmBackend::chat)
    /// renders and constrains a call that offers tools.
    pub fn training_tokens(
        &self,
        messages: &[ChatMessage],
        answer: &str,
        tools: &[ToolSpec],
    ) -> Result<(Vec<u32>, usize), LlmError> {
        let preamble = (!tools.is_empty()).then(|| tool_preamble(tools));
        let answer = if tools.is_empty() {
            answer.to_string()
        } else {
            grammar::answer_json(answer)
        };
        let prompt = self.tokenize(&self.render_chat(messages, preamble.as_deref(), true)?);
        let mut whole = messages.to_vec();
        whole.push(ChatMessage::new(Role::Assistant, answer));
        let all = self.tokenize(&self.render_chat(&whole, preamble.as_deref(), false)?);
        // The answer starts where the two renderings part (templates agree on the prompt's tokens).
        let shared = prompt.iter().zip(&all).take_while(|(a, b)| a == b).count();
        if shared == all.len() {
            return Err(LlmError::InvalidRequest(
                "the rendered answer adds no tokens to the prompt".into(),
            ));
        }
        Ok((all, shared))
    }

    fn render_chat(
        &self,
        messages: &[ChatMessage],
        tool_preamble: Option<&str>,
        add_assistant: bool,
    ) -> Result<String, LlmError> {
        let mut chat = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let (role, mut content) = match m.role {
                Role::System => ("system", m.content.clone()),
                Role::User => ("user", m.content.clone()),
                Role::Assistant => {
                    let mut c = m.content.clone();
                    for call in &m.tool_calls {
                        c.push_str(&json!({"type": "call", "tool": call.name, "arguments": call.arguments}).to_string());
                    }
                    ("assistant", c)
                }
                // Small chat templates know no tool role: tool results come back as user turns.
                Role::Tool => ("user", format!("Tool result:\n{}", m.content)),
            };
            if i == 0 && m.role == Role::System {
                if let Some(pre) = tool_preamble {
                    content.push_str("\n\n");
                    content.push_str(pre);
                }
            }
            chat.push(
                LlamaChatMessage::new(role.into(), content)
                    .map_err(|e| LlmError::InvalidRequest(e.to_string()))?,
            );
        }
        self.shared
            .model
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .apply_chat_template(&self.template, &chat, add_assistant)
            .map_err(|e| LlmError::Backend(format!("chat template failed: {e}")))
    }

    /// The next-token logits for `text` under a model spec (used to check that an adapter changes the model).
    pub async fn logits(&self, model: &str, text: &str) -> Result<Vec<f32>, LlmError> {
        let adapter = match self.resolve(model)? {
            Some(p) => Some(self.adapter(&p).await?),
            None => None,
        };
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Logits {
            text: text.to_string(),
            adapter,
            reply: tx,
        })?;
        rx.await
            .map_err(|_| LlmError::Backend("inference thread stopped".into()))?
    }

    /// The summed negative log-likelihood (nats) of the flagged tokens of `tokens` under a model spec, and how
    /// many tokens were flagged: the held-out measure of the fine-tuning gate, taken by the engine that serves.
    pub async fn sequence_nll(
        &self,
        model: &str,
        tokens: Vec<u32>,
        learn: Vec<bool>,
    ) -> Result<(f64, usize), LlmError> {
        let adapter = match self.resolve(model)? {
            Some(p) => Some(self.adapter(&p).await?),
            None => None,
        };
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Nll {
            tokens,
            learn,
            adapter,
            reply: tx,
        })?;
        rx.await
            .map_err(|_| LlmError::Backend("inference thread stopped".into()))?
    }

    fn submit(&self, job: Job) -> Result<(), LlmError> {
        self.jobs.try_send(job).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => LlmError::Busy(format!(
                "{} model calls are already waiting (llm.embedded.max_queued)",
                self.jobs.capacity().unwrap_or_default()
            )),
            crossbeam_channel::TrySendError::Disconnected(_) => {
                LlmError::Backend("the inference thread has stopped".into())
            }
        })
    }
}

#[async_trait]
impl LlmBackend for EmbeddedBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Embedded
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    async fn chat(
        &self,
        req: ChatRequest,
        tokens: Option<TokenSink>,
    ) -> Result<ChatResponse, LlmError> {
        let adapter = match self.resolve(&req.model)? {
            Some(p) => Some(self.adapter(&p).await?),
            None => None,
        };
        let with_tools = !req.tools.is_empty();
        let max = req.sampling.max_tokens;
        let mut schema = if with_tools {
            Some(tool_choice_schema(&req.tools))
        } else {
            req.format.clone()
        };
        if let Some(s) = schema.as_mut() {
            bound_strings(s, max);
        }
        let preamble = with_tools.then(|| tool_preamble(&req.tools));
        let prompt = self.render(&req.messages, preamble.as_deref())?;
        // The system message (a persona's principles, the tool preamble) is what the persona's every call
        // shares: the prefix cache keeps it longest.
        let head_bytes = match req.messages.first() {
            Some(m) if m.role == Role::System => self
                .render_chat(&req.messages[..1], preamble.as_deref(), false)
                .ok()
                .filter(|h| prompt.starts_with(h.as_str()))
                .map_or(0, |h| h.len()),
            _ => 0,
        };
        let grammar = schema.as_ref().map(compile_grammar).transpose()?;
        let mut sampling = req.sampling;
        if grammar.is_some() {
            // Room for the JSON scaffold around strings that are each capped at `max` characters.
            sampling.max_tokens = max
                .saturating_mul(STRUCTURED_BUDGET_FACTOR)
                .saturating_add(STRUCTURED_BUDGET_EXTRA);
        }
        // Structured answers are parsed whole; only free text is streamed.
        let stream = if grammar.is_none() { tokens } else { None };
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Chat(ChatJob {
            prompt,
            head_bytes,
            grammar,
            adapter,
            sampling,
            stream,
            reply: tx,
        }))?;
        let g = rx
            .await
            .map_err(|_| LlmError::Backend("inference thread stopped".into()))??;
        let mut out = ChatResponse {
            content: g.text,
            tool_calls: Vec::new(),
            prompt_tokens: g.prompt_tokens,
            cached_tokens: g.cached_tokens,
            completion_tokens: g.completion_tokens,
            finish: g.finish,
            host: None,
        };
        if let Some(schema) = &schema {
            let mut v: Value = serde_json::from_str(&out.content).map_err(|e| {
                LlmError::BadResponse(format!(
                    "structured answer is not JSON ({e}): {}",
                    out.content
                ))
            })?;
            clamp_numbers(schema, &mut v);
            if with_tools {
                if v["type"] == "call" {
                    out.tool_calls.push(ToolCall {
                        name: v["tool"].as_str().unwrap_or_default().to_string(),
                        arguments: v["arguments"].clone(),
                    });
                    out.content = String::new();
                } else {
                    out.content = v["content"].as_str().unwrap_or_default().to_string();
                }
            } else {
                out.content = v.to_string();
            }
        }
        Ok(out)
    }

    async fn embed(&self, _model: &str, inputs: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Embed {
            texts: inputs.to_vec(),
            reply: tx,
        })?;
        rx.await
            .map_err(|_| LlmError::Backend("inference thread stopped".into()))?
    }

    async fn create_model(&self, spec: &ModelSpec) -> Result<(), LlmError> {
        if spec.base != self.base_name {
            return Err(LlmError::ModelNotFound {
                model: spec.base.clone(),
                detail: format!("the embedded backend's base model is `{}`", self.base_name),
            });
        }
        let Some(adapter) = &spec.adapter else {
            return Err(LlmError::InvalidRequest(
                "an embedded model needs an adapter".into(),
            ));
        };
        self.adapter(adapter).await?;
        self.named
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(spec.name.clone(), adapter.clone());
        Ok(())
    }

    async fn health(&self) -> Result<(), LlmError> {
        Ok(())
    }

    /// The base model, a model made with create_model, or `lora:<path>` naming a readable adapter file.
    async fn check_model(&self, model: &str) -> Result<(), LlmError> {
        if let Some(path) = self.resolve(model)? {
            if !path.is_file() {
                return Err(LlmError::ModelNotFound {
                    model: model.to_string(),
                    detail: format!("no adapter file at {}", path.display()),
                });
            }
        }
        Ok(())
    }
}
