//! The inference thread: one OS thread per loaded model that owns the [`Decoder`] (all chat requests, batched)
//! and an embedding context, fed by one bounded job queue. It holds the model's read lock while it works and
//! steps aside (finishes what it serves, drops its contexts and the lock) whenever an adapter load waits for
//! the write lock. Jobs other than chat (embeddings, logits, sequence likelihoods) run whole between two
//! decoder steps, on a free sequence of the decoder's context.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use tokio::sync::oneshot;

use super::backend;
use super::decoder::{ChatJob, Decoder};
use crate::llm::{Finish, LlmError};

/// How often an idle inference thread checks whether an adapter load is waiting for the model.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// Work for the inference thread; each job carries the channel its result goes back on.
pub(super) enum Job {
    Chat(ChatJob),
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
    /// Prompt tokens whose KV came from the prefix cache instead of a prefill.
    pub(super) cached_tokens: u64,
    pub(super) completion_tokens: u64,
    pub(super) finish: Finish,
}

/// What the backend and its inference thread share: the model and the context settings.
pub(super) struct Shared {
    pub(super) model: RwLock<LlamaModel>,
    /// Adapter loads waiting for exclusive access to the model.
    pub(super) writers: AtomicUsize,
    /// Context length of one request, in tokens.
    pub(super) n_ctx: u32,
    /// Tokens per `llama_decode` at most (prompt chunks and batched steps alike).
    pub(super) n_batch: u32,
    pub(super) threads: i32,
    /// Requests decoded together (sequences of the decoder's context).
    pub(super) parallel: usize,
    pub(super) prefix_cache: bool,
    /// Cells the prefix cache may hold, in tokens.
    pub(super) prefix_cache_tokens: u32,
    /// Prompts the prefix cache may hold (one sequence id each).
    pub(super) prefix_cache_entries: u32,
    /// Shortest prefix worth reusing, in tokens.
    pub(super) prefix_min_tokens: u32,
    /// An 8-bit KV cache and padded decodes, so every decode runs the same kernels (see `Decoder::pad`).
    pub(super) batch_invariant: bool,
}

impl Shared {
    /// Sequence ids of the decoder's context: one per request slot, one per prefix cache entry.
    pub(super) fn seq_ids(&self) -> u32 {
        let cache = if self.prefix_cache {
            self.prefix_cache_entries
        } else {
            0
        };
        self.request_ids().saturating_add(cache)
    }

    /// Sequence ids for requests: `parallel`, or twice that in batch-invariant mode, whose context is sized by
    /// it: the extra `n_ctx × parallel` cells are the plug's room (see `decoder.rs`).
    pub(super) fn request_ids(&self) -> u32 {
        let parallel = self.parallel.max(1) as u32;
        if self.batch_invariant {
            parallel.saturating_mul(2)
        } else {
            parallel
        }
    }
}

/// Starts the inference thread sharing `shared`; returns the queue that feeds it, which holds at most `queue`
/// waiting jobs (a full queue is a `busy` answer, never unbounded memory).
pub(super) fn start(
    shared: &Arc<Shared>,
    queue: usize,
) -> Result<crossbeam_channel::Sender<Job>, LlmError> {
    let (tx, rx) = crossbeam_channel::bounded::<Job>(queue.max(1));
    let shared = shared.clone();
    std::thread::Builder::new()
        .name("llama-decoder".into())
        .spawn(move || worker(shared, rx))
        .map_err(|e| LlmError::Backend(format!("cannot start inference thread: {e}")))?;
    Ok(tx)
}

/// The inference thread: takes jobs while the decoder has a free sequence, steps the decoder while it serves
/// any, and rebuilds its contexts after stepping aside for an adapter load.
fn worker(shared: Arc<Shared>, rx: crossbeam_channel::Receiver<Job>) {
    loop {
        {
            let model = shared.model.read().unwrap_or_else(|p| p.into_inner());
            let mut dec: Option<Decoder<'_>> = None;
            let mut emb: Option<LlamaContext<'_>> = None;
            let mut open = true;
            loop {
                let busy = dec.as_ref().is_some_and(|d| !d.idle());
                let stepping_aside = shared.writers.load(Ordering::SeqCst) > 0;
                if !busy && (stepping_aside || !open) {
                    break;
                }
                // New work joins between steps, while a sequence is free; an idle thread waits for it.
                let mut wait = !busy;
                while open && !stepping_aside && dec.as_ref().is_none_or(Decoder::has_room) {
                    let job = if wait {
                        rx.recv_timeout(IDLE_POLL)
                    } else {
                        rx.try_recv().map_err(|e| match e {
                            crossbeam_channel::TryRecvError::Empty => {
                                crossbeam_channel::RecvTimeoutError::Timeout
                            }
                            crossbeam_channel::TryRecvError::Disconnected => {
                                crossbeam_channel::RecvTimeoutError::Disconnected
                            }
                        })
                    };
                    match job {
                        Ok(job) => run_job(&shared, &model, &mut dec, &mut emb, job),
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => break,
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => open = false,
                    }
                    wait = false;
                }
                if let Some(d) = dec.as_mut() {
                    if !d.idle() {
                        d.step();
                    }
                }
            }
            if !open {
                return;
            }
        }
        while shared.writers.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(IDLE_POLL);
        }
    }
}

fn embedding_params(shared: &Shared) -> LlamaContextParams {
    LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(shared.n_ctx))
        .with_n_batch(shared.n_batch)
        .with_n_ubatch(shared.n_batch)
        .with_n_threads(shared.threads)
        .with_n_threads_batch(shared.threads)
        .with_embeddings(true)
        .with_pooling_type(LlamaPoolingType::Mean)
}

/// Context creation mutates the model internally; llama-cpp-2 warns it is unsound in parallel.
static CONTEXT_CREATION: Mutex<()> = Mutex::new(());

fn new_context<'m>(
    model: &'m LlamaModel,
    params: LlamaContextParams,
) -> Result<LlamaContext<'m>, LlmError> {
    let _g = CONTEXT_CREATION.lock().unwrap_or_else(|p| p.into_inner());
    let b = backend()?;
    model
        .new_context(b, params)
        .map_err(|e| LlmError::Backend(format!("cannot create a llama context: {e}")))
}

/// The decoder, made on first use.
fn decoder<'a, 'm>(
    shared: &Shared,
    model: &'m LlamaModel,
    slot: &'a mut Option<Decoder<'m>>,
) -> Result<&'a mut Decoder<'m>, LlmError> {
    if slot.is_none() {
        let ctx = new_context(model, context_params(shared))?;
        *slot = Some(Decoder::new(shared, model, ctx));
    }
    slot.as_mut()
        .ok_or_else(|| LlmError::Backend("no decoder".into()))
}

/// Runs a job: a chat joins the decoder; anything else runs whole now, on a free sequence of the decoder's
/// context (the caller only takes a job when one is free) or on the embedding context.
fn run_job<'m>(
    shared: &Shared,
    model: &'m LlamaModel,
    dec: &mut Option<Decoder<'m>>,
    emb: &mut Option<LlamaContext<'m>>,
    job: Job,
) {
    match job {
        Job::Chat(chat) => match decoder(shared, model, dec) {
            Ok(d) => d.admit(chat),
            Err(e) => {
                let _ = chat.reply.send(Err(e));
            }
        },
        Job::Embed { texts, reply } => {
            if emb.is_none() {
                match new_context(model, embedding_params(shared)) {
                    Ok(c) => *emb = Some(c),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                }
            }
            let r = match emb.as_mut() {
                Some(ctx) => texts
                    .iter()
                    .map(|t| embed_one(shared, model, ctx, t))
                    .collect(),
                None => Err(LlmError::Backend("no context".into())),
            };
            let _ = reply.send(r);
        }
        Job::Logits {
            text,
            adapter,
            reply,
        } => {
            let r = on_free_seq(shared, model, dec, |d, seq| {
                next_logits(shared, model, d, seq, &text, adapter.as_ref())
            });
            let _ = reply.send(r);
        }
        Job::Nll {
            tokens,
            learn,
            adapter,
            reply,
        } => {
            let r = on_free_seq(shared, model, dec, |d, seq| {
                sequence_nll(shared, d, seq, &tokens, &learn, adapter.as_ref())
            });
            let _ = reply.send(r);
        }
    }
}

/// Runs `f` on a sequence of the decoder's context with no cells, and retires it afterwards.
fn on_free_seq<'m, T>(
    shared: &Shared,
    model: &'m LlamaModel,
    dec: &mut Option<Decoder<'m>>,
    f: impl FnOnce(&mut Decoder<'m>, i32) -> Result<T, LlmError>,
) -> Result<T, LlmError> {
    let d = decoder(shared, model, dec)?;
    let seq = d
        .take_id()
        .ok_or_else(|| LlmError::Busy("every decoder sequence is taken".into()))?;
    let r = f(d, seq);
    d.retire(seq);
    r
}

/// The serving engine's own measure of a sequence: `-Σ log p(token_i | tokens_<i)` over the tokens flagged
/// in `learn` (the fine-tuning gate compares it with and without an adapter), and their count.
fn sequence_nll(
    shared: &Shared,
    d: &mut Decoder<'_>,
    seq: i32,
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
    set_adapter(&mut d.ctx, &mut d.active, adapter)?;
    // The tokens before the first scored one are a prompt like a chat's: their cells may be cached (a gate's
    // sequences share a persona's system message) and are kept for the next sequence. Only the rows from the
    // one that predicts the first scored token on need decoding.
    let first = (1..tokens.len())
        .find(|&i| learn[i])
        .unwrap_or(tokens.len());
    let prompt: Vec<llama_cpp_2::token::LlamaToken> = tokens[..first]
        .iter()
        .map(|t| llama_cpp_2::token::LlamaToken(*t as i32))
        .collect();
    let reused = d.reuse_prefix(seq, &prompt);
    let n_batch = shared.n_batch as usize;
    let mut batch = LlamaBatch::new(n_batch, 1);
    let (mut sum, mut n) = (0.0f64, 0usize);
    for (chunk_i, chunk) in tokens[reused..].chunks(n_batch).enumerate() {
        let ctx = &mut d.ctx;
        batch.clear();
        for (j, t) in chunk.iter().enumerate() {
            let pos = reused + chunk_i * n_batch + j;
            // Position `pos` predicts token `pos + 1`.
            let wanted = learn.get(pos + 1).copied().unwrap_or(false);
            batch
                .add(
                    llama_cpp_2::token::LlamaToken(*t as i32),
                    pos as i32,
                    &[seq],
                    wanted,
                )
                .map_err(|e| LlmError::Backend(format!("batch: {e}")))?;
        }
        ctx.decode(&mut batch)
            .map_err(|e| backend_err("decode")(e.to_string()))?;
        for j in 0..chunk.len() {
            let pos = reused + chunk_i * n_batch + j;
            if !learn.get(pos + 1).copied().unwrap_or(false) {
                continue;
            }
            let nll =
                batos_kernels::row_nll(ctx.get_logits_ith(j as i32), tokens[pos + 1] as usize)
                    .ok_or_else(|| {
                        LlmError::InvalidRequest(format!(
                            "token {} is not in the vocabulary",
                            tokens[pos + 1]
                        ))
                    })?;
            sum += nll;
            n += 1;
        }
    }
    d.keep_prefix(seq, &prompt);
    Ok((sum, n))
}

pub(super) fn backend_err(what: &str) -> impl Fn(String) -> LlmError + '_ {
    move |e| LlmError::Backend(format!("{what}: {e}"))
}

/// The adapter active on a context, if any.
pub(super) type Active = Option<Arc<Mutex<LlamaLoraAdapter>>>;

/// Makes `wanted` the context's only adapter (or none), touching llama.cpp only when it changes.
pub(super) fn set_adapter(
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

/// Decodes `tokens` into sequence `seq` from position 0 in chunks of n_batch, asking for logits of the last
/// one.
fn prefill(
    shared: &Shared,
    ctx: &mut LlamaContext<'_>,
    seq: i32,
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
                .add(*t, pos as i32, &[seq], pos == last)
                .map_err(|e| LlmError::Backend(format!("batch: {e}")))?;
        }
        ctx.decode(&mut batch)
            .map_err(|e| backend_err("decode")(e.to_string()))?;
    }
    Ok(batch)
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
    d: &mut Decoder<'_>,
    seq: i32,
    text: &str,
    adapter: Option<&Arc<Mutex<LlamaLoraAdapter>>>,
) -> Result<Vec<f32>, LlmError> {
    set_adapter(&mut d.ctx, &mut d.active, adapter)?;
    let tokens = model.vocab().tokenize(text.as_bytes(), true, true);
    if tokens.is_empty() {
        return Err(LlmError::InvalidRequest("empty text".into()));
    }
    if tokens.len() > shared.n_ctx as usize {
        return Err(LlmError::InvalidRequest(format!(
            "{} tokens do not fit the context of {} (llm.embedded.n_ctx)",
            tokens.len(),
            shared.n_ctx
        )));
    }
    let batch = prefill(shared, &mut d.ctx, seq, &tokens)?;
    Ok(d.ctx.get_logits_ith(batch.n_tokens() - 1).to_vec())
}

/// `LLAMA_FLASH_ATTN_TYPE_ENABLED` (llama-cpp-2 takes the raw C enum).
const FLASH_ATTN_ENABLED: std::os::raw::c_int = 1;

/// The context a decoder needs: room for a full request per request sequence id (`parallel`, twice that in
/// batch-invariant mode for the cells the plug keeps, see the module docs) plus the prefix cache's cells, a
/// sequence id for each (and the padding and plug sequences), and one unified KV cache (so a prefix copy
/// shares cells).
fn context_params(shared: &Shared) -> LlamaContextParams {
    let cache_tokens = if shared.prefix_cache {
        shared.prefix_cache_tokens
    } else {
        0
    };
    let cells = shared
        .n_ctx
        .saturating_mul(shared.request_ids())
        .saturating_add(cache_tokens);
    // llama.cpp's CPU flash attention has three kernels (one query row over 512 cells or more: split
    // across threads; 64 rows or more: tiled; else one row at a time, in cache order) and takes the last
    // for every shape when the cache is quantized.
    let kv = if shared.batch_invariant {
        KvCacheType::Q8_0
    } else {
        KvCacheType::F16
    };
    LlamaContextParams::default()
        // A quantized cache needs flash attention.
        .with_flash_attention_policy(FLASH_ATTN_ENABLED)
        .with_type_k(kv)
        .with_type_v(kv)
        .with_n_ctx(NonZeroU32::new(cells))
        // One more than a step's tokens, for the padding token; one ubatch per decode.
        .with_n_batch(shared.n_batch + 1)
        .with_n_ubatch(shared.n_batch + 1)
        // The padding token's sequence, then the plug's.
        .with_n_seq_max(shared.seq_ids() + 2)
        .with_kv_unified(true)
        .with_n_threads(shared.threads)
        .with_n_threads_batch(shared.threads)
}
