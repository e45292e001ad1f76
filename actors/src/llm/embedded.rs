//! The embedded backend: llama.cpp in process through `llama-cpp-2`.
//!
//! One GGUF model is loaded once and shared by every persona that uses it. Inference runs on a pool of
//! dedicated OS threads (`max_contexts` of them, each with its own llama context), never on the async
//! runtime. Structured output is reliable even on a tiny model: a JSON schema is compiled to a llama.cpp
//! grammar, so the sampler can only produce text that parses. Tool calling works the same way: the model is
//! shown the tools and answers through a grammar-constrained JSON choice (answer, or call one tool with
//! arguments matching its schema). LoRA adapters are loaded on the same base model and selected per request,
//! so a cognitive atomic swap can move a persona to a new adapter without loading the base again.

use std::collections::HashMap;
use std::io::Read;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use serde_json::{json, Value};
use sha2::Digest;
use tokio::sync::oneshot;

use super::{
    BackendKind, ChatMessage, ChatRequest, ChatResponse, LlmBackend, LlmError, ModelSpec, Role,
    TokenSink, ToolCall,
};
use crate::settings::EmbeddedSettings;

/// Prefix of a model spec naming an adapter file directly: `lora:/path/to/adapter.gguf`.
pub const LORA_PREFIX: &str = "lora:";
/// Token budget of a grammar-constrained answer, as a multiple of `max_tokens` plus a fixed allowance.
const STRUCTURED_BUDGET_FACTOR: u32 = 3;
const STRUCTURED_BUDGET_EXTRA: u32 = 64;
/// How often an idle inference thread checks whether an adapter load is waiting for the model.
const IDLE_POLL: Duration = Duration::from_millis(50);

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

fn backend() -> Result<&'static LlamaBackend, LlmError> {
    BACKEND
        .get_or_init(|| LlamaBackend::init().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| LlmError::Backend(format!("llama.cpp backend init failed: {e}")))
}

/// Why the embedded model cannot be used; names the path and the fix.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("embedded model {path}: {problem}. Run scripts/fetch-model.sh (or scripts/setup.sh) to install the default model, or fix llm.embedded.model_path")]
pub struct ModelFileError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// Checks the model file before llama.cpp sees it: exists, is GGUF, matches the expected SHA-256.
pub fn verify_model_file(path: &Path, sha256: &str) -> Result<(), ModelFileError> {
    let err = |problem: String| ModelFileError {
        path: path.display().to_string(),
        problem,
    };
    let mut f = std::fs::File::open(path).map_err(|e| err(format!("cannot be opened ({e})")))?;
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic)
        .map_err(|_| err("is too short to be a GGUF file".into()))?;
    if &magic != b"GGUF" {
        return Err(err("is not a GGUF file (bad magic)".into()));
    }
    if !sha256.is_empty() {
        let mut f = std::fs::File::open(path).map_err(|e| err(format!("cannot be read ({e})")))?;
        let mut h = sha2::Sha256::new();
        std::io::copy(&mut f, &mut h).map_err(|e| err(format!("cannot be read ({e})")))?;
        let got = format!("{:x}", h.finalize());
        if !got.eq_ignore_ascii_case(sha256) {
            return Err(err(format!("is corrupt: SHA-256 {got}, expected {sha256}")));
        }
    }
    Ok(())
}

enum Job {
    Chat {
        prompt: String,
        grammar: Option<String>,
        adapter: Option<Arc<Mutex<LlamaLoraAdapter>>>,
        sampling: super::Sampling,
        stream: Option<TokenSink>,
        reply: oneshot::Sender<Result<Generated, LlmError>>,
    },
    Embed {
        texts: Vec<String>,
        reply: oneshot::Sender<Result<Vec<Vec<f32>>, LlmError>>,
    },
    Logits {
        text: String,
        adapter: Option<Arc<Mutex<LlamaLoraAdapter>>>,
        reply: oneshot::Sender<Result<Vec<f32>, LlmError>>,
    },
}

struct Generated {
    text: String,
    prompt_tokens: u64,
    completion_tokens: u64,
}

struct Shared {
    model: RwLock<LlamaModel>,
    /// Adapter loads waiting for exclusive access to the model.
    writers: AtomicUsize,
    n_ctx: u32,
    n_batch: u32,
    threads: i32,
}

/// The in-process llama.cpp backend.
pub struct EmbeddedBackend {
    shared: Arc<Shared>,
    jobs: crossbeam_channel::Sender<Job>,
    path: PathBuf,
    /// The model name personas use for the plain base model.
    base_name: String,
    /// Adapters by file path.
    adapters: Mutex<HashMap<PathBuf, Arc<Mutex<LlamaLoraAdapter>>>>,
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
    /// Verifies and loads the model, then starts the inference threads. `base_name` is the model name that
    /// means "the base model" (e.g. the personas' default model in settings).
    pub fn load(s: &EmbeddedSettings, base_name: &str) -> Result<Self, LlmError> {
        verify_model_file(&s.model_path, &s.model_sha256)
            .map_err(|e| LlmError::Backend(e.to_string()))?;
        llama_cpp_2::send_logs_to_tracing(
            llama_cpp_2::LogOptions::default().with_logs_enabled(s.native_logs),
        );
        let b = backend()?;
        let model = LlamaModel::load_from_file(b, &s.model_path, &LlamaModelParams::default())
            .map_err(|e| {
                LlmError::Backend(
                    ModelFileError {
                        path: s.model_path.display().to_string(),
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
        });
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        for i in 0..s.max_contexts.max(1) {
            let shared = shared.clone();
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("llama-{i}"))
                .spawn(move || worker(shared, rx))
                .map_err(|e| LlmError::Backend(format!("cannot start inference thread: {e}")))?;
        }
        tracing::info!(event = "llm.embedded_loaded", path = %s.model_path.display(), n_embd, threads, contexts = s.max_contexts, "embedded model loaded");
        Ok(Self {
            shared,
            jobs: tx,
            path: s.model_path.clone(),
            base_name: base_name.to_string(),
            adapters: Mutex::new(HashMap::new()),
            named: Mutex::new(HashMap::new()),
            template,
            n_embd,
        })
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

    /// Loads an adapter once (needs the model exclusively, so the inference threads step aside briefly).
    async fn adapter(&self, path: &Path) -> Result<Arc<Mutex<LlamaLoraAdapter>>, LlmError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        if let Some(a) = self
            .adapters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&path)
        {
            return Ok(a.clone());
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
        let adapter = Arc::new(Mutex::new(adapter));
        self.adapters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.clone(), adapter.clone());
        tracing::info!(event = "llm.adapter_loaded", path = %path.display(), "LoRA adapter loaded");
        Ok(adapter)
    }

    fn render(
        &self,
        messages: &[ChatMessage],
        tool_preamble: Option<&str>,
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
            .apply_chat_template(&self.template, &chat, true)
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

    fn submit(&self, job: Job) -> Result<(), LlmError> {
        self.jobs
            .send(job)
            .map_err(|_| LlmError::Backend("the inference threads have stopped".into()))
    }
}

/// JSON schema of the tool-or-answer choice offered to the model when tools are bound.
pub fn tool_choice_schema(tools: &[super::ToolSpec]) -> Value {
    let mut options = vec![json!({
        "type": "object",
        "properties": {"type": {"const": "answer"}, "content": {"type": "string"}},
        "required": ["type", "content"]
    })];
    for t in tools {
        let args = if t.parameters.is_object() {
            t.parameters.clone()
        } else {
            json!({"type": "object"})
        };
        options.push(json!({
            "type": "object",
            "properties": {"type": {"const": "call"}, "tool": {"const": t.name}, "arguments": args},
            "required": ["type", "tool", "arguments"]
        }));
    }
    json!({"oneOf": options})
}

fn tool_preamble(tools: &[super::ToolSpec]) -> String {
    let mut s = String::from(
        "You can call tools. Reply with exactly one JSON object: {\"type\":\"answer\",\"content\":\"...\"} to answer, \
         or {\"type\":\"call\",\"tool\":\"<name>\",\"arguments\":{...}} to call a tool. Tools:",
    );
    for t in tools {
        s.push_str(&format!(
            "\n- {}: {} Arguments schema: {}",
            t.name, t.description, t.parameters
        ));
    }
    s
}

/// Caps every unbounded string in a schema at `max` characters, so a grammar-constrained answer always
/// closes within its token budget (a token covers at least one character).
pub fn bound_strings(schema: &mut Value, max: u32) {
    match schema {
        Value::Object(m) => {
            let is_string = m.get("type").and_then(Value::as_str) == Some("string");
            if is_string
                && !m.contains_key("maxLength")
                && !m.contains_key("enum")
                && !m.contains_key("const")
            {
                m.insert("maxLength".into(), json!(max));
            }
            for v in m.values_mut() {
                bound_strings(v, max);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| bound_strings(v, max)),
        _ => {}
    }
}

/// llama.cpp's schema-to-grammar honours `minimum`/`maximum` for integers only; numbers are clamped into
/// their declared range afterwards so the answer validates against the schema it was asked for.
pub fn clamp_numbers(schema: &Value, value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                let lo = schema
                    .get("minimum")
                    .and_then(Value::as_f64)
                    .unwrap_or(f64::NEG_INFINITY);
                let hi = schema
                    .get("maximum")
                    .and_then(Value::as_f64)
                    .unwrap_or(f64::INFINITY);
                let c = x.clamp(lo, hi);
                if c != x {
                    if let Some(n) = serde_json::Number::from_f64(c) {
                        *value = Value::Number(n);
                    }
                }
            }
        }
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if let Some(sub) = schema.get("properties").and_then(|p| p.get(k)) {
                    clamp_numbers(sub, v);
                }
            }
            // Tool-choice answers: find the branch whose const fields match.
            if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
                for b in branches {
                    let matches = b["properties"].as_object().is_some_and(|props| {
                        props
                            .iter()
                            .all(|(k, p)| p.get("const").is_none_or(|c| m.get(k) == Some(c)))
                    });
                    if matches {
                        let mut whole = Value::Object(std::mem::take(m));
                        clamp_numbers(b, &mut whole);
                        if let Value::Object(back) = whole {
                            *m = back;
                        }
                        break;
                    }
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items") {
                a.iter_mut().for_each(|v| clamp_numbers(items, v));
            }
        }
        _ => {}
    }
}

fn compile_grammar(schema: &Value) -> Result<String, LlmError> {
    llama_cpp_2::json_schema_to_grammar(&schema.to_string()).map_err(|e| {
        LlmError::InvalidRequest(format!(
            "the JSON schema cannot be compiled to a grammar: {e}"
        ))
    })
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
        let prompt = self.render(
            &req.messages,
            with_tools.then(|| tool_preamble(&req.tools)).as_deref(),
        )?;
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
        self.submit(Job::Chat {
            prompt,
            grammar,
            adapter,
            sampling,
            stream,
            reply: tx,
        })?;
        let g = rx
            .await
            .map_err(|_| LlmError::Backend("inference thread stopped".into()))??;
        let mut out = ChatResponse {
            content: g.text,
            tool_calls: Vec::new(),
            prompt_tokens: g.prompt_tokens,
            completion_tokens: g.completion_tokens,
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
}

/// An inference thread: owns one generation context and one embedding context, recreated whenever it steps
/// aside for an adapter load.
fn worker(shared: Arc<Shared>, rx: crossbeam_channel::Receiver<Job>) {
    loop {
        {
            let model = shared.model.read().unwrap_or_else(|p| p.into_inner());
            let mut gen: Option<LlamaContext<'_>> = None;
            let mut active: Active = None;
            let mut emb: Option<LlamaContext<'_>> = None;
            loop {
                if shared.writers.load(Ordering::SeqCst) > 0 {
                    break;
                }
                let job = match rx.recv_timeout(IDLE_POLL) {
                    Ok(j) => j,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                };
                run_job(&shared, &model, &mut gen, &mut active, &mut emb, job);
            }
        }
        while shared.writers.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(IDLE_POLL);
        }
    }
}

fn context_params(shared: &Shared, embeddings: bool) -> LlamaContextParams {
    let p = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(shared.n_ctx))
        .with_n_batch(shared.n_batch)
        .with_n_ubatch(shared.n_batch)
        .with_n_threads(shared.threads)
        .with_n_threads_batch(shared.threads);
    if embeddings {
        p.with_embeddings(true)
            .with_pooling_type(LlamaPoolingType::Mean)
    } else {
        p
    }
}

/// Context creation mutates the model internally; llama-cpp-2 warns it is unsound in parallel.
static CONTEXT_CREATION: Mutex<()> = Mutex::new(());

fn ensure<'m>(
    slot: &mut Option<LlamaContext<'m>>,
    model: &'m LlamaModel,
    params: LlamaContextParams,
) -> Result<(), LlmError> {
    if slot.is_none() {
        let _g = CONTEXT_CREATION.lock().unwrap_or_else(|p| p.into_inner());
        let b = backend()?;
        *slot = Some(
            model
                .new_context(b, params)
                .map_err(|e| LlmError::Backend(format!("cannot create a llama context: {e}")))?,
        );
    }
    Ok(())
}

fn run_job<'m>(
    shared: &Shared,
    model: &'m LlamaModel,
    gen: &mut Option<LlamaContext<'m>>,
    active: &mut Active,
    emb: &mut Option<LlamaContext<'m>>,
    job: Job,
) {
    match job {
        Job::Chat {
            prompt,
            grammar,
            adapter,
            sampling,
            stream,
            reply,
        } => {
            let r = ensure(gen, model, context_params(shared, false)).and_then(|()| {
                match gen.as_mut() {
                    Some(ctx) => generate(
                        shared,
                        model,
                        ctx,
                        active,
                        &prompt,
                        grammar.as_deref(),
                        adapter.as_ref(),
                        sampling,
                        stream.as_ref(),
                    ),
                    None => Err(LlmError::Backend("no context".into())),
                }
            });
            let _ = reply.send(r);
        }
        Job::Embed { texts, reply } => {
            let r = ensure(emb, model, context_params(shared, true)).and_then(|()| {
                match emb.as_mut() {
                    Some(ctx) => texts
                        .iter()
                        .map(|t| embed_one(shared, model, ctx, t))
                        .collect(),
                    None => Err(LlmError::Backend("no context".into())),
                }
            });
            let _ = reply.send(r);
        }
        Job::Logits {
            text,
            adapter,
            reply,
        } => {
            let r = ensure(gen, model, context_params(shared, false)).and_then(|()| {
                match gen.as_mut() {
                    Some(ctx) => next_logits(shared, model, ctx, active, &text, adapter.as_ref()),
                    None => Err(LlmError::Backend("no context".into())),
                }
            });
            let _ = reply.send(r);
        }
    }
}

fn backend_err(what: &str) -> impl Fn(String) -> LlmError + '_ {
    move |e| LlmError::Backend(format!("{what}: {e}"))
}

/// The adapter active on a context, if any.
type Active = Option<Arc<Mutex<LlamaLoraAdapter>>>;

/// Makes `wanted` the context's only adapter (or none), touching llama.cpp only when it changes.
fn set_adapter(
    ctx: &mut LlamaContext<'_>,
    active: &mut Active,
    wanted: Option<&Arc<Mutex<LlamaLoraAdapter>>>,
) -> Result<(), LlmError> {
    match (active.as_ref(), wanted) {
        (Some(a), Some(w)) if Arc::ptr_eq(a, w) => Ok(()),
        (None, None) => Ok(()),
        (_, Some(w)) => {
            let mut a = w.lock().unwrap_or_else(|p| p.into_inner());
            ctx.lora_adapter_set(&mut a, 1.0)
                .map_err(|e| LlmError::Backend(format!("cannot apply adapter: {e}")))?;
            *active = Some(w.clone());
            Ok(())
        }
        (Some(current), None) => {
            // llama.cpp clears every adapter; the argument only satisfies the binding's signature.
            let mut a = current.lock().unwrap_or_else(|p| p.into_inner());
            ctx.lora_adapter_remove(&mut a)
                .map_err(|e| LlmError::Backend(format!("cannot remove adapter: {e}")))?;
            drop(a);
            *active = None;
            Ok(())
        }
    }
}

/// Decodes `tokens` from position 0 in chunks of n_batch, asking for logits of the last one.
fn prefill(
    shared: &Shared,
    ctx: &mut LlamaContext<'_>,
    tokens: &[llama_cpp_2::token::LlamaToken],
) -> Result<LlamaBatch<'static>, LlmError> {
    let n_batch = shared.n_batch as usize;
    let mut batch = LlamaBatch::new(n_batch, 1);
    let last = tokens.len().saturating_sub(1);
    for (chunk_i, chunk) in tokens.chunks(n_batch).enumerate() {
        batch.clear();
        for (j, t) in chunk.iter().enumerate() {
            let pos = chunk_i * n_batch + j;
            batch
                .add(*t, pos as i32, &[0], pos == last)
                .map_err(|e| LlmError::Backend(format!("batch: {e}")))?;
        }
        ctx.decode(&mut batch)
            .map_err(|e| backend_err("decode")(e.to_string()))?;
    }
    Ok(batch)
}

#[allow(clippy::too_many_arguments)]
fn generate(
    shared: &Shared,
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    active: &mut Active,
    prompt: &str,
    grammar: Option<&str>,
    adapter: Option<&Arc<Mutex<LlamaLoraAdapter>>>,
    sampling: super::Sampling,
    stream: Option<&TokenSink>,
) -> Result<Generated, LlmError> {
    ctx.clear_kv_cache();
    set_adapter(ctx, active, adapter)?;
    let vocab = model.vocab();
    let tokens = vocab.tokenize(prompt.as_bytes(), true, true);
    let n_ctx = shared.n_ctx as usize;
    if tokens.is_empty() {
        return Err(LlmError::InvalidRequest("empty prompt".into()));
    }
    if tokens.len() + 1 >= n_ctx {
        return Err(LlmError::InvalidRequest(format!(
            "prompt of {} tokens does not fit the context of {n_ctx} (llm.embedded.n_ctx)",
            tokens.len()
        )));
    }
    let mut batch = prefill(shared, ctx, &tokens)?;
    let mut chain = Vec::new();
    if let Some(g) = grammar {
        chain.push(
            LlamaSampler::grammar(model, g, "root")
                .map_err(|e| LlmError::InvalidRequest(format!("grammar: {e}")))?,
        );
    }
    if sampling.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        chain.push(LlamaSampler::top_p(sampling.top_p, 1));
        chain.push(LlamaSampler::temp(sampling.temperature));
        chain.push(LlamaSampler::dist(sampling.seed as u32));
    }
    let mut sampler = LlamaSampler::chain_simple(chain);
    let mut out = Vec::<u8>::new();
    let mut sent = 0usize;
    let mut pos = tokens.len();
    let mut produced = 0u64;
    let mut idx = batch.n_tokens() - 1;
    while produced < u64::from(sampling.max_tokens) && pos < n_ctx {
        let tok = sampler.sample(ctx, idx);
        if vocab.is_eog(tok) {
            break;
        }
        vocab.token_to_piece_into(tok, &mut out, false, None);
        produced += 1;
        if let Some(sink) = stream {
            // Only whole UTF-8 characters leave; a split character waits for its next byte.
            let valid = match std::str::from_utf8(&out[sent..]) {
                Ok(s) => s.len(),
                Err(e) => e.valid_up_to(),
            };
            if valid > 0 {
                let _ = sink.send(String::from_utf8_lossy(&out[sent..sent + valid]).into_owned());
                sent += valid;
            }
        }
        batch.clear();
        batch
            .add(tok, pos as i32, &[0], true)
            .map_err(|e| LlmError::Backend(format!("batch: {e}")))?;
        pos += 1;
        ctx.decode(&mut batch)
            .map_err(|e| backend_err("decode")(e.to_string()))?;
        idx = batch.n_tokens() - 1;
    }
    if grammar.is_some() && produced >= u64::from(sampling.max_tokens) {
        return Err(LlmError::BadResponse(format!(
            "structured answer cut off at its budget of {} tokens (raise llm.max_tokens)",
            sampling.max_tokens
        )));
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    if let Some(sink) = stream {
        if sent < out.len() {
            let _ = sink.send(String::from_utf8_lossy(&out[sent..]).into_owned());
        }
    }
    Ok(Generated {
        text,
        prompt_tokens: tokens.len() as u64,
        completion_tokens: produced,
    })
}

fn embed_one(
    shared: &Shared,
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    text: &str,
) -> Result<Vec<f32>, LlmError> {
    ctx.clear_kv_cache();
    let mut tokens = model.vocab().tokenize(text.as_bytes(), true, false);
    tokens.truncate((shared.n_batch as usize).min(shared.n_ctx as usize));
    if tokens.is_empty() {
        return Err(LlmError::InvalidRequest("nothing to embed".into()));
    }
    let mut batch = LlamaBatch::new(tokens.len(), 1);
    batch
        .add_sequence(&tokens, 0, false)
        .map_err(|e| LlmError::Backend(format!("batch: {e}")))?;
    ctx.decode(&mut batch)
        .map_err(|e| backend_err("decode")(e.to_string()))?;
    let v = ctx
        .embeddings_seq_ith(0)
        .map_err(|e| LlmError::Backend(format!("embeddings: {e}")))?
        .to_vec();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    Ok(if norm > 0.0 {
        v.into_iter().map(|x| x / norm).collect()
    } else {
        v
    })
}

fn next_logits(
    shared: &Shared,
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    active: &mut Active,
    text: &str,
    adapter: Option<&Arc<Mutex<LlamaLoraAdapter>>>,
) -> Result<Vec<f32>, LlmError> {
    ctx.clear_kv_cache();
    set_adapter(ctx, active, adapter)?;
    let tokens = model.vocab().tokenize(text.as_bytes(), true, true);
    if tokens.is_empty() {
        return Err(LlmError::InvalidRequest("empty text".into()));
    }
    let batch = prefill(shared, ctx, &tokens)?;
    Ok(ctx.get_logits_ith(batch.n_tokens() - 1).to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_get_bounded_unless_already_constrained() {
        let mut s = json!({"type":"object","properties":{
            "a":{"type":"string"},"b":{"type":"string","maxLength":5},"c":{"type":"string","enum":["x"]},
            "d":{"type":"array","items":{"type":"string"}}}});
        bound_strings(&mut s, 100);
        assert_eq!(s["properties"]["a"]["maxLength"], 100);
        assert_eq!(s["properties"]["b"]["maxLength"], 5);
        assert!(s["properties"]["c"].get("maxLength").is_none());
        assert_eq!(s["properties"]["d"]["items"]["maxLength"], 100);
    }

    #[test]
    fn numbers_are_clamped_into_their_range_including_tool_branches() {
        let schema =
            json!({"type":"object","properties":{"d":{"type":"number","minimum":0,"maximum":1}}});
        let mut v = json!({"d": 2018.5});
        clamp_numbers(&schema, &mut v);
        assert_eq!(v["d"], json!(1.0));
        let tools = vec![crate::llm::ToolSpec {
            name: "t".into(),
            description: String::new(),
            parameters: json!({"type":"object","properties":{"x":{"type":"number","minimum":-1,"maximum":0}}}),
        }];
        let schema = tool_choice_schema(&tools);
        let mut v = json!({"type":"call","tool":"t","arguments":{"x": 5}});
        clamp_numbers(&schema, &mut v);
        assert_eq!(v["arguments"]["x"], json!(0.0));
        assert_eq!(v["tool"], "t");
    }
}
