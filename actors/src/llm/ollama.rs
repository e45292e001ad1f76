//! The Ollama backend: a real Ollama server over HTTP, through `ollama-rs`.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use ollama_rs::error::OllamaError;
use ollama_rs::generation::chat::request::ChatMessageRequest;
use ollama_rs::generation::chat::{ChatMessage as OChatMessage, MessageRole};
use ollama_rs::generation::embeddings::request::{EmbeddingsInput, GenerateEmbeddingsRequest};
use ollama_rs::generation::parameters::{FormatType, JsonStructure};
use ollama_rs::generation::tools::{ToolCall as OToolCall, ToolFunctionInfo, ToolInfo, ToolType};
use ollama_rs::models::ModelOptions;
use ollama_rs::Ollama;
use sha2::Digest;

use super::{
    BackendKind, ChatMessage, ChatRequest, ChatResponse, Finish, LlmBackend, LlmError, ModelSpec,
    Role, Sampling, TokenSink, ToolCall,
};

/// An Ollama server.
#[derive(Debug, Clone)]
pub struct OllamaBackend {
    client: Ollama,
    http: reqwest::Client,
    url: String,
    timeout: Duration,
}

impl OllamaBackend {
    /// A client for the server at `url` (e.g. `http://127.0.0.1:11434`); each request may take `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, LlmError> {
        let mut parsed = reqwest::Url::parse(url)
            .map_err(|e| LlmError::InvalidRequest(format!("invalid ollama_url `{url}`: {e}")))?;
        // ollama-rs appends "api/..." to the base, so the base path must end in '/'.
        if !parsed.path().ends_with('/') {
            let p = format!("{}/", parsed.path());
            parsed.set_path(&p);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| LlmError::Backend(format!("cannot build HTTP client: {e}")))?;
        let client = Ollama::builder()
            .url(parsed.clone())
            .reqwest_client(http.clone())
            .build();
        Ok(Self {
            client,
            http,
            url: parsed.to_string(),
            timeout,
        })
    }

    fn map_err(&self, model: &str, e: OllamaError) -> LlmError {
        match e {
            OllamaError::ReqwestError(e) if e.is_timeout() => {
                LlmError::Timeout(self.timeout.as_millis() as u64)
            }
            OllamaError::ReqwestError(e) => {
                let mut detail = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    detail = format!("{detail}: {s}");
                    src = s.source();
                }
                LlmError::Unreachable {
                    url: self.url.clone(),
                    detail,
                }
            }
            OllamaError::Other(body) => {
                let msg = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                    .unwrap_or(body);
                if msg.contains("not found") {
                    LlmError::ModelNotFound {
                        model: model.to_string(),
                        detail: msg,
                    }
                } else {
                    LlmError::Backend(msg)
                }
            }
            OllamaError::JsonError(e) => LlmError::BadResponse(e.to_string()),
            other => LlmError::Backend(other.to_string()),
        }
    }

    fn build_request(req: &ChatRequest) -> Result<ChatMessageRequest, LlmError> {
        let messages = req.messages.iter().map(to_ollama_message).collect();
        let mut r = ChatMessageRequest::new(req.model.clone(), messages).options(
            ModelOptions::default()
                .temperature(req.sampling.temperature)
                .top_p(req.sampling.top_p)
                .top_k(req.sampling.top_k)
                .min_p(req.sampling.min_p)
                .repeat_penalty(req.sampling.repeat_penalty)
                .repeat_last_n(i32::try_from(req.sampling.repeat_last_n).unwrap_or(i32::MAX))
                .seed(req.sampling.seed)
                .num_predict(i32::try_from(req.sampling.max_tokens).unwrap_or(i32::MAX)),
        );
        if !req.tools.is_empty() {
            let tools = req
                .tools
                .iter()
                .map(|t| {
                    Ok(ToolInfo {
                        tool_type: ToolType::Function,
                        function: ToolFunctionInfo {
                            name: t.name.clone(),
                            description: t.description.clone(),
                            parameters: serde_json::from_value(t.parameters.clone()).map_err(
                                |e| {
                                    LlmError::InvalidRequest(format!(
                                        "tool `{}` has an invalid schema: {e}",
                                        t.name
                                    ))
                                },
                            )?,
                        },
                    })
                })
                .collect::<Result<Vec<_>, LlmError>>()?;
            r = r.tools(tools);
        }
        if let Some(schema) = &req.format {
            let schema = serde_json::from_value(schema.clone()).map_err(|e| {
                LlmError::InvalidRequest(format!("output schema is not a JSON schema object: {e}"))
            })?;
            r = r.format(FormatType::StructuredJson(Box::new(
                JsonStructure::new_for_schema(schema),
            )));
        }
        Ok(r)
    }
}

fn to_ollama_message(m: &ChatMessage) -> OChatMessage {
    let role = match m.role {
        Role::System => MessageRole::System,
        Role::User => MessageRole::User,
        Role::Assistant => MessageRole::Assistant,
        Role::Tool => MessageRole::Tool,
    };
    let mut out = OChatMessage::new(role, m.content.clone());
    out.tool_calls = m
        .tool_calls
        .iter()
        .map(|c| OToolCall {
            function: ollama_rs::generation::tools::ToolCallFunction {
                name: c.name.clone(),
                arguments: c.arguments.clone(),
            },
        })
        .collect();
    out
}

/// Ollama's reply data has no done reason here: an answer that used its whole budget ran out of it.
fn finish_of(completion_tokens: u64, s: &Sampling) -> Finish {
    if completion_tokens >= u64::from(s.max_tokens) {
        Finish::Length
    } else {
        Finish::Stop
    }
}

fn from_ollama_calls(calls: &[OToolCall]) -> Vec<ToolCall> {
    calls
        .iter()
        .map(|c| ToolCall {
            name: c.function.name.clone(),
            arguments: c.function.arguments.clone(),
        })
        .collect()
}

#[async_trait]
impl LlmBackend for OllamaBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Ollama
    }

    fn location(&self) -> String {
        self.url.clone()
    }

    async fn chat(
        &self,
        req: ChatRequest,
        tokens: Option<TokenSink>,
    ) -> Result<ChatResponse, LlmError> {
        let request = Self::build_request(&req)?;
        let Some(sink) = tokens else {
            let resp = self
                .client
                .send_chat_messages(request)
                .await
                .map_err(|e| self.map_err(&req.model, e))?;
            let (p, c) = resp
                .final_data
                .as_ref()
                .map(|d| (d.prompt_eval_count, d.eval_count))
                .unwrap_or_default();
            return Ok(ChatResponse {
                content: resp.message.content,
                tool_calls: from_ollama_calls(&resp.message.tool_calls),
                prompt_tokens: p,
                cached_tokens: 0,
                completion_tokens: c,
                finish: finish_of(c, &req.sampling),
                host: None,
            });
        };
        let mut stream = self
            .client
            .send_chat_messages_stream(request)
            .await
            .map_err(|e| self.map_err(&req.model, e))?;
        let mut out = ChatResponse::default();
        let mut done = false;
        while let Some(item) = stream.next().await {
            let chunk = item.map_err(|()| LlmError::Unreachable {
                url: self.url.clone(),
                detail: "the response stream broke off".into(),
            })?;
            if !chunk.message.content.is_empty() {
                out.content.push_str(&chunk.message.content);
                // The receiver going away (task cancelled) must not fail the call.
                let _ = sink.send(chunk.message.content.clone());
            }
            out.tool_calls
                .extend(from_ollama_calls(&chunk.message.tool_calls));
            if let Some(d) = &chunk.final_data {
                out.prompt_tokens = d.prompt_eval_count;
                out.completion_tokens = d.eval_count;
                out.finish = finish_of(d.eval_count, &req.sampling);
            }
            if chunk.done {
                done = true;
                break;
            }
        }
        if !done {
            return Err(LlmError::BadResponse(
                "the response stream ended without a final (done) message".into(),
            ));
        }
        Ok(out)
    }

    async fn embed(&self, model: &str, inputs: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let req = GenerateEmbeddingsRequest::new(
            model.to_string(),
            EmbeddingsInput::Multiple(inputs.to_vec()),
        );
        let resp = self
            .client
            .generate_embeddings(req)
            .await
            .map_err(|e| self.map_err(model, e))?;
        if resp.embeddings.len() != inputs.len() {
            return Err(LlmError::BadResponse(format!(
                "asked for {} embeddings, got {}",
                inputs.len(),
                resp.embeddings.len()
            )));
        }
        Ok(resp.embeddings)
    }

    async fn create_model(&self, spec: &ModelSpec) -> Result<(), LlmError> {
        self.create_model_streamed(spec, None).await
    }

    async fn health(&self) -> Result<(), LlmError> {
        self.client
            .list_local_models()
            .await
            .map(|_| ())
            .map_err(|e| self.map_err("", e))
    }

    /// `POST /api/show`: 200 when the server has the model, 404 when it does not.
    async fn check_model(&self, model: &str) -> Result<(), LlmError> {
        self.model_info(model).await.map(|_| ())
    }
}

impl OllamaBackend {
    /// `POST /api/create` with `from` and at most one adapter (uploaded first), reading the server's status
    /// lines as they stream; each goes to `status`. It ends well only on a `success` line.
    pub async fn create_model_streamed(
        &self,
        spec: &ModelSpec,
        status: Option<TokenSink>,
    ) -> Result<(), LlmError> {
        let mut body = serde_json::json!({"model": spec.name, "from": spec.base, "stream": true});
        if let Some(adapter) = &spec.adapter {
            let digest = self.upload_blob(adapter).await?;
            let file = adapter
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "adapter.gguf".into());
            body["adapters"] = serde_json::json!({ file: digest });
        }
        let url = format!("{}api/create", self.url);
        let mut resp = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| unreachable(&url, e))?;
        let refused = |msg: String| -> LlmError {
            if spec.adapter.is_some() {
                LlmError::Backend(format!("{} ({msg})", ADAPTER_LIMIT))
            } else {
                LlmError::Backend(format!("/api/create failed: {msg}"))
            }
        };
        if !resp.status().is_success() {
            let code = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let msg = error_text(&text).unwrap_or_else(|| format!("HTTP {code}"));
            if code == reqwest::StatusCode::NOT_FOUND {
                return Err(LlmError::ModelNotFound {
                    model: spec.base.clone(),
                    detail: msg,
                });
            }
            let version = self.version().await.unwrap_or_else(|_| "unknown".into());
            return Err(refused(format!(
                "the server at {} (version {version}) answered {code}: {msg}",
                self.url
            )));
        }
        // Status lines are newline-delimited JSON; a chunk may hold several lines or part of one.
        let mut pending = Vec::<u8>::new();
        let mut last = String::new();
        loop {
            let chunk = resp.chunk().await.map_err(|e| unreachable(&url, e))?;
            let end = chunk.is_none();
            if let Some(c) = chunk {
                pending.extend_from_slice(&c);
            } else if !pending.is_empty() {
                pending.push(b'\n');
            }
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line).trim().to_string();
                if line.is_empty() {
                    continue;
                }
                if let Some(msg) = error_text(&line) {
                    let version = self.version().await.unwrap_or_else(|_| "unknown".into());
                    return Err(refused(format!(
                        "the server at {} (version {version}) said: {msg}",
                        self.url
                    )));
                }
                let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
                    LlmError::BadResponse(format!("/api/create sent `{line}`: {e}"))
                })?;
                last = v["status"].as_str().unwrap_or_default().to_string();
                tracing::debug!(event = "llm.create_status", model = %spec.name, status = %last, "ollama create");
                if let Some(s) = &status {
                    let _ = s.send(last.clone());
                }
            }
            if end {
                break;
            }
        }
        if last != "success" {
            return Err(LlmError::BadResponse(format!(
                "/api/create for `{}` ended without success (last status `{last}`)",
                spec.name
            )));
        }
        Ok(())
    }

    /// Pushes a file to the server's blob store unless it has it already (`HEAD` then
    /// `POST /api/blobs/sha256:<hex>`), returning its digest. The server checks the digest against the bytes.
    async fn upload_blob(&self, path: &Path) -> Result<String, LlmError> {
        let bytes = tokio::fs::read(path).await.map_err(|e| {
            LlmError::InvalidRequest(format!("cannot read adapter {}: {e}", path.display()))
        })?;
        let digest = format!("sha256:{:x}", sha2::Sha256::digest(&bytes));
        let url = format!("{}api/blobs/{digest}", self.url);
        let head = self
            .http
            .head(&url)
            .send()
            .await
            .map_err(|e| unreachable(&url, e))?;
        if head.status().is_success() {
            return Ok(digest);
        }
        let resp = self
            .http
            .post(&url)
            .body(bytes)
            .send()
            .await
            .map_err(|e| unreachable(&url, e))?;
        let code = resp.status();
        if !code.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(LlmError::Backend(format!(
                "the upload of {} as {digest} answered {code}: {}",
                path.display(),
                error_text(&text).unwrap_or(text)
            )));
        }
        Ok(digest)
    }

    /// The server's version (`GET /api/version`), for messages about what a version can do.
    pub async fn version(&self) -> Result<String, LlmError> {
        let url = format!("{}api/version", self.url);
        let v: serde_json::Value = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unreachable(&url, e))?
            .json()
            .await
            .map_err(|e| LlmError::BadResponse(format!("/api/version: {e}")))?;
        v["version"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| LlmError::BadResponse(format!("/api/version answered {v}")))
    }

    /// What the server says of `model`'s weights (`model_info` of `POST /api/show`: `general.architecture`,
    /// `<arch>.embedding_length`, ...).
    pub async fn model_info(&self, model: &str) -> Result<serde_json::Value, LlmError> {
        let url = format!("{}api/show", self.url);
        let resp = self
            .http
            .post(&url)
            .json(&serde_json::json!({ "model": model }))
            .send()
            .await
            .map_err(|e| unreachable(&url, e))?;
        match resp.status() {
            s if s.is_success() => {}
            reqwest::StatusCode::NOT_FOUND => {
                return Err(LlmError::ModelNotFound {
                    model: model.to_string(),
                    detail: format!(
                        "the Ollama server at {} does not have it (ollama pull?)",
                        self.url
                    ),
                })
            }
            s => return Err(LlmError::Backend(format!("/api/show answered {s}"))),
        }
        let v: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| LlmError::BadResponse(format!("/api/show: {e}")))?;
        Ok(v["model_info"].clone())
    }
}

/// Why a server may refuse an adapter: the one limit users meet.
const ADAPTER_LIMIT: &str = "this Ollama server would not build a model from the adapter: Ollama takes one GGUF \
     LoRA adapter per model through /api/create's `adapters` field from v0.5.5 on, and a later version is \
     reported to have dropped adapter creation (v0.34.1); use a version that has it, or serve the persona on \
     the embedded backend (llm.backend = \"embedded\"), which swaps adapters in place";

/// The `error` of an Ollama error body, if it is one.
fn error_text(body: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()?
        .get("error")?
        .as_str()
        .map(str::to_string)
}

/// A request that got no HTTP answer at all.
fn unreachable(url: &str, e: reqwest::Error) -> LlmError {
    LlmError::Unreachable {
        url: url.to_string(),
        detail: e.to_string(),
    }
}
