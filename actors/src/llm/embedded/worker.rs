//! The inference worker pool: `max_contexts` OS threads, each owning its own llama contexts, fed by one job
//! queue. The threads hold the model's read lock while they work and step aside (drop their contexts and the
//! lock) whenever an adapter load waits for the write lock.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use tokio::sync::oneshot;

use super::backend;
use super::guard::LoopGuard;
use crate::llm::{Finish, LlmError, Sampling, TokenSink};

/// How often an idle inference thread checks whether an adapter load is waiting for the model.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// Work for the inference threads; each job carries the channel its result goes back on.
pub(super) enum Job {
    Chat {
        prompt: String,
        grammar: Option<String>,
        adapter: Option<Arc<Mutex<LlamaLoraAdapter>>>,
        sampling: Sampling,
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
    /// Summed negative log-likelihood of the flagged tokens of one sequence, and how many there were.
    Nll {
        tokens: Vec<u32>,
        learn: Vec<bool>,
        adapter: Option<Arc<Mutex<LlamaLoraAdapter>>>,
        reply: oneshot::Sender<Result<(f64, usize), LlmError>>,
    },
}

/// The output of a chat job.
pub(super) struct Generated {
    pub(super) text: String,
    pub(super) prompt_tokens: u64,
    pub(super) completion_tokens: u64,
    pub(super) finish: Finish,
}

/// llama.cpp's default DRY sequence breakers: a repeat that crosses one of these does not grow.
const DRY_BREAKERS: [&str; 4] = ["\n", ":", "\"", "*"];

/// What the backend and its inference threads share: the model and the context settings.
pub(super) struct Shared {
    pub(super) model: RwLock<LlamaModel>,
    /// Adapter loads waiting for exclusive access to the model.
    pub(super) writers: AtomicUsize,
    pub(super) n_ctx: u32,
    pub(super) n_batch: u32,
    pub(super) threads: i32,
}

/// Starts `contexts` inference threads (at least one) sharing `shared`; returns the queue that feeds them,
/// which holds at most `queue` waiting jobs (a full queue is a `busy` answer, never unbounded memory).
pub(super) fn start(
    shared: &Arc<Shared>,
    contexts: usize,
    queue: usize,
) -> Result<crossbeam_channel::Sender<Job>, LlmError> {
    let (tx, rx) = crossbeam_channel::bounded::<Job>(queue.max(1));
    for i in 0..contexts.max(1) {
        let shared = shared.clone();
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("llama-{i}"))
            .spawn(move || worker(shared, rx))
            .map_err(|e| LlmError::Backend(format!("cannot start inference thread: {e}")))?;
    }
    Ok(tx)
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
        Job::Nll {
            tokens,
            learn,
            adapter,
            reply,
        } => {
            let r = ensure(gen, model, context_params(shared, false)).and_then(|()| {
                match gen.as_mut() {
                    Some(ctx) => {
                        sequence_nll(shared, ctx, active, &tokens, &learn, adapter.as_ref())
                    }
                    None => Err(LlmError::Backend("no context".into())),
                }
            });
            let _ = reply.send(r);
        }
    }
}

/// The serving engine's own measure of a sequence: `-Σ log p(token_i | tokens_<i)` over the tokens flagged
/// in `learn` (the fine-tuning gate compares it with and without an adapter), and their count.
fn sequence_nll(
    shared: &Shared,
    ctx: &mut LlamaContext<'_>,
    active: &mut Active,
    tokens: &[u32],
    learn: &[bool],
    adapter: Option<&Arc<Mutex<LlamaLoraAdapter>>>,
) -> Result<(f64, usize), LlmError> {
    if tokens.len() < 2 || learn.len() != tokens.len() {
        return Err(LlmError::InvalidRequest(
            "a sequence needs at least 2 tokens and a flag per token".into(),
        ));
    }
    if tokens.len() > shared.n_ctx as usize {
        return Err(LlmError::InvalidRequest(format!(
            "{} tokens do not fit the context of {} (llm.embedded.n_ctx)",
            tokens.len(),
            shared.n_ctx
        )));
    }
    ctx.clear_kv_cache();
    set_adapter(ctx, active, adapter)?;
    let n_batch = shared.n_batch as usize;
    let mut batch = LlamaBatch::new(n_batch, 1);
    let (mut sum, mut n) = (0.0f64, 0usize);
    for (chunk_i, chunk) in tokens.chunks(n_batch).enumerate() {
        batch.clear();
        for (j, t) in chunk.iter().enumerate() {
            let pos = chunk_i * n_batch + j;
            // Position `pos` predicts token `pos + 1`.
            let wanted = learn.get(pos + 1).copied().unwrap_or(false);
            batch
                .add(
                    llama_cpp_2::token::LlamaToken(*t as i32),
                    pos as i32,
                    &[0],
                    wanted,
                )
                .map_err(|e| LlmError::Backend(format!("batch: {e}")))?;
        }
        ctx.decode(&mut batch)
            .map_err(|e| backend_err("decode")(e.to_string()))?;
        for j in 0..chunk.len() {
            let pos = chunk_i * n_batch + j;
            if !learn.get(pos + 1).copied().unwrap_or(false) {
                continue;
            }
            let logits = ctx.get_logits_ith(j as i32);
            let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max
                + logits
                    .iter()
                    .map(|l| (*l as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            let target = logits
                .get(tokens[pos + 1] as usize)
                .copied()
                .ok_or_else(|| {
                    LlmError::InvalidRequest(format!(
                        "token {} is not in the vocabulary",
                        tokens[pos + 1]
                    ))
                })?;
            sum += lse - target as f64;
            n += 1;
        }
    }
    Ok((sum, n))
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
    sampling: Sampling,
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
    let mut sampler = sampler_chain(model, grammar, &sampling)?;
    // Free text gets the loop guard; a structured answer is bounded by its grammar and budget instead (a cut
    // would leave invalid JSON).
    let mut guard = if grammar.is_none() {
        LoopGuard::new(sampling.loop_ngram, sampling.loop_max_repeats)
    } else {
        LoopGuard::new(0, 0)
    };
    let mut out = Vec::<u8>::new();
    let mut sent = 0usize;
    let mut pos = tokens.len();
    let mut produced = 0u64;
    let mut finish = Finish::Length;
    let mut idx = batch.n_tokens() - 1;
    while produced < u64::from(sampling.max_tokens) && pos < n_ctx {
        let tok = sampler.sample(ctx, idx);
        if vocab.is_eog(tok) {
            finish = Finish::Stop;
            break;
        }
        vocab.token_to_piece_into(tok, &mut out, false, None);
        produced += 1;
        if let Some(cut) = guard.check(&out) {
            out.truncate(cut);
            finish = Finish::Loop;
            break;
        }
        if let Some(sink) = stream {
            // Only bytes no guard cut can take back, and only whole UTF-8 characters, leave.
            let safe = guard.committed();
            if safe > sent {
                let valid = match std::str::from_utf8(&out[sent..safe]) {
                    Ok(s) => s.len(),
                    Err(e) => e.valid_up_to(),
                };
                if valid > 0 {
                    let _ =
                        sink.send(String::from_utf8_lossy(&out[sent..sent + valid]).into_owned());
                    sent += valid;
                }
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
    // The last word closes its n-gram only now: a repeat that ends the answer is cut like any other.
    if finish != Finish::Loop {
        if let Some(cut) = guard.finish(&out) {
            out.truncate(cut);
            finish = Finish::Loop;
        }
    }
    if grammar.is_some() && finish == Finish::Length {
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
        finish,
    })
}

/// The sampler chain of one generation, in llama.cpp's usual order (see [`Sampling`]): grammar →
/// repeat penalty → DRY → top-k → top-p → min-p → temperature → draw (or greedy at temperature 0).
fn sampler_chain(
    model: &LlamaModel,
    grammar: Option<&str>,
    s: &Sampling,
) -> Result<LlamaSampler, LlmError> {
    let mut chain = Vec::new();
    if let Some(g) = grammar {
        chain.push(
            LlamaSampler::grammar(model, g, "root")
                .map_err(|e| LlmError::InvalidRequest(format!("grammar: {e}")))?,
        );
    }
    let last_n = i32::try_from(s.repeat_last_n).unwrap_or(i32::MAX);
    if s.repeat_penalty != 1.0 && last_n > 0 {
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            last_n,
            s.repeat_penalty,
            0.0,
            0.0,
        ));
    }
    if s.dry_multiplier > 0.0 && last_n > 0 {
        let allowed = i32::try_from(s.dry_allowed_length).unwrap_or(i32::MAX);
        chain.push(LlamaSampler::dry(
            model,
            s.dry_multiplier,
            s.dry_base,
            allowed,
            last_n,
            DRY_BREAKERS,
        ));
    }
    if s.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if s.top_k > 0 {
            chain.push(LlamaSampler::top_k(
                i32::try_from(s.top_k).unwrap_or(i32::MAX),
            ));
        }
        chain.push(LlamaSampler::top_p(s.top_p, 1));
        if s.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(s.min_p, 1));
        }
        chain.push(LlamaSampler::temp(s.temperature));
        chain.push(LlamaSampler::dist(s.seed as u32));
    }
    Ok(LlamaSampler::chain_simple(chain))
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
