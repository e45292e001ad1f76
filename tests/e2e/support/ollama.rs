//! TEST DOUBLE: a scripted HTTP server speaking Ollama's REST API (`/api/chat` streaming and not,
//! `/api/embed`, `/api/tags`, `/api/show`, `/api/version`, `/api/create`, `/api/blobs`). No Ollama server can run here, so this
//! stands in for one; the daemon talks to it through the real `ollama-rs` client over a real socket.
//!
//! Replies are scripted per persona (recognised by its system prompt, "You are BRICK..."); without a
//! script each persona answers a default that lets a task run to the end. Every request body is recorded.
//!
//! Model building follows Ollama's rules as its API documents them: a blob is `POST`ed to
//! `/api/blobs/sha256:<hex>` and kept only when the bytes hash to that digest (201, else 400), `HEAD` says
//! whether it is there (200/404); `/api/create` takes `from` and at most one adapter, which must be a blob it
//! has (400 otherwise: "only one adapter is currently supported"), streams its status lines and then serves the
//! new name. [`ScriptedOllama::refuse_adapters`] makes it a server whose version cannot build from adapters.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// One scripted answer.
#[derive(Debug, Clone, Default)]
pub struct Scripted {
    /// Text content (JSON text for structured steps).
    pub content: String,
    /// Tool calls: (name, arguments).
    pub tool_calls: Vec<(String, Value)>,
    /// Delay before answering.
    pub delay: Duration,
    /// Answer with this HTTP status and error text instead.
    pub error: Option<(u16, String)>,
}

impl Scripted {
    /// A text answer.
    pub fn text(s: impl Into<String>) -> Self {
        Self {
            content: s.into(),
            ..Default::default()
        }
    }
    /// A JSON answer.
    pub fn json(v: Value) -> Self {
        Self::text(v.to_string())
    }
    /// A tool call answer.
    pub fn call(name: &str, args: Value) -> Self {
        Self {
            tool_calls: vec![(name.to_string(), args)],
            ..Default::default()
        }
    }
    /// With a delay.
    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Path.
    pub path: String,
    /// Persona recognised from the system prompt (chat only).
    pub persona: Option<String>,
    /// Model asked for.
    pub model: String,
    /// Whole JSON body.
    pub body: Value,
}

/// Decides an answer from the persona and request body; `None` falls through to scripts and defaults.
pub type Responder = Arc<dyn Fn(Option<&str>, &Value) -> Option<Scripted> + Send + Sync>;

#[derive(Default)]
struct Inner {
    responder: Option<Responder>,
    scripts: HashMap<String, VecDeque<Scripted>>,
    received: Vec<Received>,
    default_delay: Duration,
    /// When set, chat answers are made one at a time (a model host with one slot, as a GPU serving one
    /// request is): the delay of each is spent holding this.
    one_slot: Option<Arc<tokio::sync::Mutex<()>>>,
    embed_dim: usize,
    /// Models this server does not have (`/api/show` answers 404, as Ollama does); every other name exists.
    absent: std::collections::HashSet<String>,
    /// Uploaded blobs: digest (`sha256:<hex>`) → size in bytes.
    blobs: HashMap<String, usize>,
    /// Models made by `/api/create`.
    created: Vec<String>,
    /// `Some(version)`: a server of that version, which refuses to build a model from an adapter.
    refuses_adapters: Option<String>,
}

/// The scripted server.
#[derive(Clone)]
pub struct ScriptedOllama {
    inner: Arc<Mutex<Inner>>,
    /// Base URL, e.g. `http://127.0.0.1:PORT`.
    pub url: String,
    _task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ScriptedOllama {
    /// Starts the server on a free loopback port, in its own runtime thread so it outlives test runtimes.
    pub fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            embed_dim: 64,
            ..Default::default()
        }));
        let (tx, rx) = std::sync::mpsc::channel();
        let state = inner.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let app = Router::new()
                    .route("/api/chat", post(chat))
                    .route("/api/embed", post(embed))
                    .route("/api/tags", get(tags))
                    .route("/api/show", post(show))
                    .route("/api/create", post(create))
                    .route("/api/version", get(version))
                    .route(
                        "/api/blobs/{digest}",
                        // Ollama takes model-sized blobs; axum's default cap is 2 MB.
                        post(blob)
                            .head(has_blob)
                            .layer(axum::extract::DefaultBodyLimit::disable()),
                    )
                    .with_state(state);
                let server = tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                });
                tx.send((format!("http://{addr}"), server)).unwrap();
                // Keep the runtime alive for the life of the process.
                std::future::pending::<()>().await;
            });
        });
        let (url, server) = rx.recv().unwrap();
        Self {
            inner,
            url,
            _task: Arc::new(AbortOnDrop(server)),
        }
    }

    /// Makes `model` unknown to this server, as a typo or an unpulled model is to a real Ollama.
    pub fn absent(&self, model: &str) {
        self.inner.lock().unwrap().absent.insert(model.to_string());
    }

    /// Makes this a server of `version` that cannot build a model from an adapter (`/api/create` answers 400).
    pub fn refuse_adapters(&self, version: &str) {
        self.inner.lock().unwrap().refuses_adapters = Some(version.to_string());
    }

    /// Blobs uploaded so far: digest → size.
    pub fn blobs(&self) -> HashMap<String, usize> {
        self.inner.lock().unwrap().blobs.clone()
    }

    /// Models made by `/api/create`, in order.
    pub fn created(&self) -> Vec<String> {
        self.inner.lock().unwrap().created.clone()
    }

    /// Queues answers for a persona, used in order before falling back to its default.
    pub fn script(&self, persona: &str, answers: Vec<Scripted>) {
        self.inner
            .lock()
            .unwrap()
            .scripts
            .entry(persona.to_string())
            .or_default()
            .extend(answers);
    }

    /// Installs a function consulted before scripts and defaults.
    pub fn set_responder(
        &self,
        f: impl Fn(Option<&str>, &Value) -> Option<Scripted> + Send + Sync + 'static,
    ) {
        self.inner.lock().unwrap().responder = Some(Arc::new(f));
    }

    /// Delay every unscripted answer.
    pub fn set_default_delay(&self, d: Duration) {
        self.inner.lock().unwrap().default_delay = d;
    }

    /// Makes chat answers one at a time, each taking its delay: a model host with one slot (the stand-in for
    /// a GPU host in the scaling bench).
    pub fn one_slot(&self) {
        self.inner.lock().unwrap().one_slot = Some(Arc::new(tokio::sync::Mutex::new(())));
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Chat requests made by one persona.
    pub fn chats_by(&self, persona: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == "/api/chat" && r.persona.as_deref() == Some(persona))
            .collect()
    }

    /// All chat requests.
    pub fn chats(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == "/api/chat")
            .collect()
    }
}

fn persona_of(body: &Value) -> Option<String> {
    let sys = body["messages"]
        .as_array()?
        .iter()
        .find(|m| m["role"] == "system")?;
    let content = sys["content"].as_str()?;
    ["ALFRED", "BABS", "BRICK", "ROBIN"]
        .iter()
        .find(|p| content.contains(&format!("You are {p}")))
        .or_else(|| {
            // A persona whose shipped prompt does not say its name (ALFRED's speaks of the answer only) is
            // known by that prompt's first line.
            shipped_openings()
                .iter()
                .find(|(_, opening)| content.starts_with(opening.as_str()))
                .map(|(p, _)| p)
        })
        .map(|p| p.to_string())
}

/// Each persona's shipped system prompt, first line (from config/codex.toml).
fn shipped_openings() -> &'static Vec<(&'static str, String)> {
    static OPENINGS: std::sync::OnceLock<Vec<(&'static str, String)>> = std::sync::OnceLock::new();
    OPENINGS.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/codex.toml");
        let codex = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| batos_actors::principles::Codex::parse(&t).ok());
        ["ALFRED", "BABS", "BRICK", "ROBIN"]
            .into_iter()
            .filter_map(|p| {
                let prompt = codex.as_ref()?.persona(p)?.system_prompt.trim().to_string();
                let first = prompt.lines().next()?.to_string();
                Some((p, first))
            })
            .collect()
    })
}

/// The text of the last user message.
pub fn last_user(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn default_answer(persona: Option<&str>, body: &Value) -> Scripted {
    let model = body["model"].as_str().unwrap_or_default();
    let structured = body.get("format").is_some_and(|f| !f.is_null());
    match (persona, structured) {
        (Some("ALFRED"), true) => {
            Scripted::json(json!({"needs_research": false, "plan": "Answer directly and briefly."}))
        }
        (Some("ROBIN"), true) => {
            Scripted::json(json!({"dissonance": 0.1, "critique": "In harmony with the need."}))
        }
        (Some("ALFRED"), false) => Scripted::text(format!("Final answer from ALFRED ({model}).")),
        (Some("BRICK"), _) => Scripted::text(format!("Draft by BRICK ({model}).")),
        (Some("BABS"), _) => Scripted::text(format!("Notes by BABS ({model}).")),
        (_, true) => Scripted::json(json!({})),
        _ => Scripted::text(format!(
            "ok ({model}): {}",
            last_user(body).chars().take(40).collect::<String>()
        )),
    }
}

fn message_json(model: &str, content: &str, calls: &[(String, Value)], done: bool) -> Value {
    let mut v = json!({
        "model": model,
        "created_at": "2026-11-23T00:00:00Z",
        "message": {"role": "assistant", "content": content},
        "done": done,
    });
    if !calls.is_empty() {
        v["message"]["tool_calls"] = Value::Array(
            calls
                .iter()
                .map(|(n, a)| json!({"function": {"name": n, "arguments": a}}))
                .collect(),
        );
    }
    if done {
        for (k, x) in [
            ("total_duration", 1000),
            ("load_duration", 1),
            ("prompt_eval_count", 10),
            ("prompt_eval_duration", 1),
            ("eval_count", 5),
            ("eval_duration", 1),
        ] {
            v[k] = json!(x);
        }
        v["done_reason"] = json!("stop");
    }
    v
}

async fn chat(State(inner): State<Arc<Mutex<Inner>>>, Json(body): Json<Value>) -> Response {
    let persona = persona_of(&body);
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let slot = inner.lock().unwrap().one_slot.clone();
    let answer = {
        let mut g = inner.lock().unwrap();
        g.received.push(Received {
            path: "/api/chat".into(),
            persona: persona.clone(),
            model: model.clone(),
            body: body.clone(),
        });
        let from_responder = g
            .responder
            .clone()
            .and_then(|f| f(persona.as_deref(), &body));
        let scripted = from_responder.or_else(|| {
            persona
                .as_ref()
                .and_then(|p| g.scripts.get_mut(p))
                .and_then(|q| q.pop_front())
        });
        match scripted {
            Some(s) => s,
            None => default_answer(persona.as_deref(), &body).delayed(g.default_delay),
        }
    };
    if !answer.delay.is_zero() {
        let _held = match &slot {
            Some(m) => Some(m.lock().await),
            None => None,
        };
        tokio::time::sleep(answer.delay).await;
    }
    if let Some((code, msg)) = answer.error {
        return (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Json(json!({"error": msg})),
        )
            .into_response();
    }
    if body["stream"].as_bool().unwrap_or(false) {
        let mut lines = String::new();
        let words: Vec<&str> = answer.content.split_inclusive(' ').collect();
        for w in &words {
            lines.push_str(&message_json(&model, w, &[], false).to_string());
            lines.push('\n');
        }
        lines.push_str(&message_json(&model, "", &answer.tool_calls, true).to_string());
        lines.push('\n');
        Response::builder()
            .header("content-type", "application/x-ndjson")
            .body(Body::from(lines))
            .unwrap()
    } else {
        Json(message_json(
            &model,
            &answer.content,
            &answer.tool_calls,
            true,
        ))
        .into_response()
    }
}

/// A deterministic bag-of-words embedding: texts sharing words are close.
pub fn embed_text(text: &str, dim: usize) -> Vec<f32> {
    let mut v = vec![0f32; dim];
    for w in text
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
    {
        let h = w.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        v[(h % dim as u64) as usize] += 1.0;
    }
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    } else {
        v[0] = 1.0;
    }
    v
}

async fn embed(State(inner): State<Arc<Mutex<Inner>>>, Json(body): Json<Value>) -> Response {
    let dim = {
        let mut g = inner.lock().unwrap();
        g.received.push(Received {
            path: "/api/embed".into(),
            persona: None,
            model: body["model"].as_str().unwrap_or_default().to_string(),
            body: body.clone(),
        });
        g.embed_dim
    };
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().unwrap_or_default().to_string())
            .collect(),
        _ => vec![],
    };
    let embeddings: Vec<Vec<f32>> = inputs.iter().map(|t| embed_text(t, dim)).collect();
    Json(json!({"model": body["model"], "embeddings": embeddings})).into_response()
}

async fn tags() -> Response {
    Json(json!({"models": [{"name": "smollm2:135m", "modified_at": "2026-11-23T00:00:00Z", "size": 98362432}]})).into_response()
}

async fn show(State(inner): State<Arc<Mutex<Inner>>>, Json(body): Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or_default().to_string();
    if inner.lock().unwrap().absent.contains(&model) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("model '{model}' not found")})),
        )
            .into_response();
    }
    // SmolLM2-135M's shape, as Ollama reports it: the forge checks it against its GGUF file.
    Json(json!({
        "model_info": {"general.architecture": "llama", "llama.embedding_length": 576, "llama.block_count": 30},
        "capabilities": ["completion", "tools"],
    }))
    .into_response()
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({"error": msg.into()}))).into_response()
}

async fn version(State(inner): State<Arc<Mutex<Inner>>>) -> Response {
    let v = inner.lock().unwrap().refuses_adapters.clone();
    Json(json!({"version": v.unwrap_or_else(|| "0.12.6".into())})).into_response()
}

async fn create(State(inner): State<Arc<Mutex<Inner>>>, Json(body): Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let mut g = inner.lock().unwrap();
    g.received.push(Received {
        path: "/api/create".into(),
        persona: None,
        model: model.clone(),
        body: body.clone(),
    });
    let adapters: Vec<String> = body["adapters"]
        .as_object()
        .map(|m| {
            m.values()
                .map(|d| d.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    let from = body["from"].as_str().unwrap_or_default();
    if model.is_empty() || from.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "neither 'from' or 'files' was specified",
        );
    }
    if g.absent.contains(from) {
        return error(StatusCode::NOT_FOUND, format!("model '{from}' not found"));
    }
    if !adapters.is_empty() && g.refuses_adapters.is_some() {
        return error(StatusCode::BAD_REQUEST, "invalid model reference: adapters");
    }
    if adapters.len() > 1 {
        return error(
            StatusCode::BAD_REQUEST,
            "only one adapter is currently supported",
        );
    }
    if let Some(missing) = adapters.iter().find(|d| !g.blobs.contains_key(*d)) {
        return error(StatusCode::BAD_REQUEST, format!("blob {missing} not found"));
    }
    g.created.push(model.clone());
    g.absent.remove(&model);
    let mut status: Vec<String> = vec![format!("using existing layer sha256:{}", "0".repeat(64))];
    status.extend(adapters.iter().map(|d| format!("using existing layer {d}")));
    status.extend(["writing manifest".to_string(), "success".to_string()]);
    if body["stream"].as_bool() == Some(false) {
        return Json(json!({"status": "success"})).into_response();
    }
    let lines: String = status
        .iter()
        .map(|s| json!({ "status": s }).to_string() + "\n")
        .collect();
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from(lines))
        .unwrap()
}

async fn blob(
    State(inner): State<Arc<Mutex<Inner>>>,
    axum::extract::Path(digest): axum::extract::Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    use sha2::Digest;
    let actual = format!("sha256:{:x}", sha2::Sha256::digest(&bytes));
    if actual != digest {
        return error(
            StatusCode::BAD_REQUEST,
            format!("digest mismatch, expected \"{digest}\", got \"{actual}\""),
        );
    }
    inner.lock().unwrap().blobs.insert(digest, bytes.len());
    StatusCode::CREATED.into_response()
}

async fn has_blob(
    State(inner): State<Arc<Mutex<Inner>>>,
    axum::extract::Path(digest): axum::extract::Path<String>,
) -> StatusCode {
    if inner.lock().unwrap().blobs.contains_key(&digest) {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

/// ROBIN finds everything discordant (0.95, "Still discordant."), and asked for an amendment proposes
/// `new_prompt` as BRICK's system prompt; the other personas answer their defaults.
pub fn discordant_robin(ollama: &ScriptedOllama, new_prompt: &'static str) {
    ollama.set_responder(move |persona, body| {
        if persona != Some("ROBIN") || body["format"].is_null() {
            return None;
        }
        if body["format"]["properties"].get("rationale").is_some() {
            return Some(Scripted::json(json!({
                "persona": "BRICK",
                "changes": {"system_prompt": new_prompt},
                "rationale": "BRICK's cold logic keeps missing the human cost."
            })));
        }
        Some(Scripted::json(
            json!({"dissonance": 0.95, "critique": "Still discordant."}),
        ))
    });
}
