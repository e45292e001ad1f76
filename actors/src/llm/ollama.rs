//! The Ollama backend: a real Ollama server over HTTP, through `ollama-rs`.

use std::collections::HashMap;
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
use ollama_rs::models::create::CreateModelRequest;
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
                completion_tokens: c,
                finish: finish_of(c, &req.sampling),
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
        let mut req = CreateModelRequest::new(spec.name.clone()).from_model(spec.base.clone());
        if let Some(adapter) = &spec.adapter {
            let digest = self.upload_blob(adapter).await?;
            let file = adapter
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "adapter.gguf".into());
            req = req.adapters(HashMap::from([(file, digest)]));
        }
        self.client
            .create_model(req)
            .await
            .map(|_| ())
            .map_err(|e| self.map_err(&spec.base, e))
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
        let url = format!("{}api/show", self.url);
        let resp = self
            .http
            .post(&url)
            .json(&serde_json::json!({ "model": model }))
            .send()
            .await
            .map_err(|e| unreachable(&url, e))?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            reqwest::StatusCode::NOT_FOUND => Err(LlmError::ModelNotFound {
                model: model.to_string(),
                detail: format!(
                    "the Ollama server at {} does not have it (ollama pull?)",
                    self.url
                ),
            }),
            s => Err(LlmError::Backend(format!("/api/show answered {s}"))),
        }
    }
}

impl OllamaBackend {
    /// Pushes a file to the server's blob store (`POST /api/blobs/sha256:<hex>`), returning its digest.
    async fn upload_blob(&self, path: &Path) -> Result<String, LlmError> {
        let bytes = tokio::fs::read(path).await.map_err(|e| {
            LlmError::InvalidRequest(format!("cannot read adapter {}: {e}", path.display()))
        })?;
        let digest = format!("sha256:{:x}", sha2::Sha256::digest(&bytes));
        let url = format!("{}api/blobs/{digest}", self.url);
        let resp = self
            .http
            .post(&url)
            .body(bytes)
            .send()
            .await
            .map_err(|e| unreachable(&url, e))?;
        if !resp.status().is_success() {
            return Err(LlmError::Backend(format!(
                "blob upload answered {}",
                resp.status()
            )));
        }
        Ok(digest)
    }
}

/// A request that got no HTTP answer at all.
fn unreachable(url: &str, e: reqwest::Error) -> LlmError {
    LlmError::Unreachable {
        url: url.to_string(),
        detail: e.to_string(),
    }
}
