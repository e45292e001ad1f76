//! The batched decoder: one llama context serving up to `parallel` chat requests at once.
//!
//! Every request is a llama.cpp *sequence* (ids `0..parallel`) in one context with a unified KV cache. Each
//! [`step`](Decoder::step) makes one `llama_decode` per adapter in use: the last sampled token of every
//! generating sequence plus as many prompt tokens of the sequences still prefilling as the batch has room
//! for (continuous batching: a request joins between steps, never waits for the others to finish, and a
//! long prompt does not stop the others' streams). Each sequence keeps its own sampler chain (grammar,
//! penalties, temperature, seed) and loop guard, so its tokens are what it would get alone.
//!
//! Adapters: llama.cpp applies LoRA adapters to a whole context, not per sequence, so sequences are grouped
//! by adapter and each group gets its own decode in the step (the adapter switched in between). A sequence's
//! KV cells hold what its own adapter computed, so groups never see each other's adapter.
//!
//! Prompt prefixes: with the prefix cache on, a prompt's KV cells are kept under a cache sequence id when its
//! prefill ends ([`super::prefix`] decides which and evicts), and a new prompt copies the longest cached
//! prefix into its own sequence (`llama_memory_seq_cp`, a metadata change in a unified cache) and prefills
//! only the rest.
//!
//! Cancellation: a request whose caller has gone (its reply channel closed) is dropped before the next step
//! and its sequence removed at once.
//!
//! Batch invariance (`batch_invariant`): a request's tokens are those it gets decoded alone, whatever runs
//! beside it and whenever it arrives. Two things are needed. The kernels: an 8-bit KV cache and padded decodes
//! (see [`Decoder::pad`]), so every decode takes the same code path. And the cells: flash attention sums a
//! sequence's cells in *cache* order, so its cells must lie in position order, as they do alone. llama.cpp
//! puts new tokens in the first free cells from its head, and goes back to the start of the cache when there
//! are enough free cells before the head — so any hole (an ended request's cells removed, an evicted or trimmed
//! prefix entry) lets a later token land before its own sequence's earlier cells, and which holes there are
//! depends on timing. So in this mode no cell is freed while the decoder lives: what would be removed is handed
//! to a *plug* sequence that keeps the cells occupied (masked out of everyone's attention) and no hole opens;
//! the plug's cells are let go only all at once, with everything else, while nothing is served
//! ([`Decoder::take_id`]), which leaves no hole either. Its room is the extra `n_ctx × parallel` cells this mode
//! reserves; should it run out mid-run, cells are removed as usual (a request running then may differ in its
//! last bits) and `llm.cells_freed` says so.

mod cells;

use std::sync::Arc;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::oneshot;

use super::guard::LoopGuard;
use super::prefix::{AdapterKey, PrefixCache};
use super::sampler::{sampler_chain, DrySamplers};
use super::worker::{backend_err, set_adapter, Active, Generated, Shared};
use crate::llm::{Finish, LlmError, Sampling, TokenSink};

/// A chat request as the decoder takes it.
pub(super) struct ChatJob {
    pub(super) prompt: String,
    /// Bytes of `prompt` that are its stable head (the rendered system message), which the prefix cache keeps
    /// longest; 0 for none.
    pub(super) head_bytes: usize,
    pub(super) grammar: Option<String>,
    pub(super) adapter: Active,
    pub(super) sampling: Sampling,
    pub(super) stream: Option<TokenSink>,
    pub(super) reply: oneshot::Sender<Result<Generated, LlmError>>,
}

/// One request being served: its sequence, where its prompt stands, and its answer so far.
struct Seq {
    id: i32,
    adapter: Active,
    prompt: Vec<LlamaToken>,
    /// Leading prompt tokens that are its stable head (the system message), for the prefix cache; 0: none.
    head: usize,
    /// Prompt tokens already in the KV cache (copied from the prefix cache or decoded).
    fed: usize,
    /// Of those, how many came from the prefix cache.
    reused: usize,
    /// The token to feed next, once the prompt is in (the last one sampled).
    next: Option<LlamaToken>,
    sampler: LlamaSampler,
    guard: LoopGuard,
    structured: bool,
    max_tokens: u32,
    out: Vec<u8>,
    sent: usize,
    produced: u64,
    stream: Option<TokenSink>,
    reply: oneshot::Sender<Result<Generated, LlmError>>,
}

impl Seq {
    /// Position of the next token fed.
    fn pos(&self) -> usize {
        self.prompt.len() + self.produced.saturating_sub(1) as usize
    }
}

/// The decoder of one loaded model (see the module docs). Lives on the inference thread.
pub(super) struct Decoder<'m> {
    pub(super) ctx: LlamaContext<'m>,
    /// The adapter applied to the context now.
    pub(super) active: Active,
    model: &'m LlamaModel,
    slots: Vec<Option<Seq>>,
    /// Request sequence ids nobody holds and whose cells are gone.
    ids: Vec<i32>,
    /// Batch-invariant mode: the sequence that keeps freed cells occupied (see the module docs).
    plug: Option<i32>,
    /// Cells the plug holds, at most (cells it shares with the prefix cache are counted too).
    plugged: usize,
    /// Most cells the plug may hold: the `n_ctx × parallel` cells batch-invariant mode reserves beyond the
    /// running requests' own.
    plug_budget: usize,
    cache: Option<PrefixCache>,
    dry: DrySamplers,
    batch: LlamaBatch<'static>,
    n_ctx: usize,
    n_batch: usize,
    /// Pad decodes with fewer than two outputs (see [`Self::pad`]); `None` when batch invariance is off.
    scratch: Option<i32>,
}

impl<'m> Decoder<'m> {
    /// A decoder over a fresh context (made by the worker for this decoder's needs: its `context_params`).
    pub(super) fn new(shared: &Shared, model: &'m LlamaModel, ctx: LlamaContext<'m>) -> Self {
        let parallel = shared.parallel.max(1);
        let request_ids = shared.request_ids() as i32;
        let cache = shared.prefix_cache.then(|| {
            PrefixCache::new(
                request_ids..shared.seq_ids() as i32,
                shared.prefix_cache_tokens as usize,
                shared.prefix_min_tokens as usize,
            )
        });
        Self {
            ctx,
            active: None,
            model,
            slots: (0..parallel).map(|_| None).collect(),
            ids: (0..request_ids).rev().collect(),
            plug: shared
                .batch_invariant
                .then_some(shared.seq_ids() as i32 + 1),
            plugged: 0,
            plug_budget: shared.n_ctx as usize * (request_ids as usize).saturating_sub(parallel),
            cache,
            dry: DrySamplers::default(),
            batch: LlamaBatch::new(shared.n_batch as usize + 1, 1),
            n_ctx: shared.n_ctx as usize,
            n_batch: shared.n_batch as usize,
            scratch: shared.batch_invariant.then_some(shared.seq_ids() as i32),
        }
    }

    /// Whether another request can be served now.
    pub(super) fn has_room(&self) -> bool {
        self.slots.iter().any(Option::is_none)
    }

    /// A sequence id with no cells, for a new request or a whole job. In batch-invariant mode, while nothing
    /// is served and the plug holds half its room or more, every cell goes at once (the prefix cache too):
    /// the cache starts again with no hole in it.
    pub(super) fn take_id(&mut self) -> Option<i32> {
        if self.plug.is_some() && self.idle() && self.plugged * 2 >= self.plug_budget.max(1) {
            if let Some(c) = self.cache.as_mut() {
                c.forget_all();
            }
            self.ctx.clear_kv_cache();
            tracing::debug!(
                event = "llm.cells_reset",
                plugged = self.plugged,
                "idle: every cell let go at once"
            );
            self.plugged = 0;
        }
        self.ids.pop()
    }

    /// Gives back the id of an ended request or job, its cells freed ([`Self::free_cells`]).
    pub(super) fn retire(&mut self, id: i32) {
        self.free_cells(id, None);
        self.ids.push(id);
    }

    /// Whether no request is being served.
    pub(super) fn idle(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    /// Takes a chat request into a free sequence, reusing a cached prefix of its prompt; answers at once with
    /// an error when the prompt is unusable or no sequence is free.
    pub(super) fn admit(&mut self, job: ChatJob) {
        let slot = self.slots.iter().position(Option::is_none);
        let id = slot.and_then(|_| self.take_id());
        let (Some(slot), Some(id)) = (slot, id) else {
            let _ = job.reply.send(Err(LlmError::Busy(
                "every decoder sequence is taken (llm.embedded.parallel)".into(),
            )));
            return;
        };
        match self.start(id, job) {
            Ok(seq) => self.slots[slot] = Some(seq),
            Err((e, reply)) => {
                self.retire(id);
                let _ = reply.send(Err(e));
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn start(
        &mut self,
        id: i32,
        job: ChatJob,
    ) -> Result<Seq, (LlmError, oneshot::Sender<Result<Generated, LlmError>>)> {
        let ChatJob {
            prompt,
            head_bytes,
            grammar,
            adapter,
            sampling,
            stream,
            reply,
        } = job;
        let tokens = self.model.vocab().tokenize(prompt.as_bytes(), true, true);
        // The head's tokens, where the prompt's tokenization starts with them (it does at a message boundary).
        let head = prompt
            .get(..head_bytes)
            .filter(|h| !h.is_empty())
            .map(|h| self.model.vocab().tokenize(h.as_bytes(), true, true))
            .filter(|h| tokens.starts_with(h))
            .map_or(0, |h| h.len());
        if tokens.is_empty() {
            return Err((LlmError::InvalidRequest("empty prompt".into()), reply));
        }
        if tokens.len() + 1 >= self.n_ctx {
            return Err((
                LlmError::InvalidRequest(format!(
                    "prompt of {} tokens does not fit the context of {} (llm.embedded.n_ctx)",
                    tokens.len(),
                    self.n_ctx
                )),
                reply,
            ));
        }
        let sampler = match sampler_chain(self.model, &mut self.dry, grammar.as_deref(), &sampling)
        {
            Ok(s) => s,
            Err(e) => return Err((e, reply)),
        };
        let key = adapter_key(&adapter);
        let mut fed = 0;
        if let Some((from, len)) = self.cache.as_mut().and_then(|c| c.lookup(key, &tokens)) {
            match self
                .ctx
                .copy_kv_cache_seq(from, id, Some(0), Some(len as u32))
            {
                Ok(()) => fed = len,
                Err(e) => {
                    tracing::warn!(event = "llm.prefix_copy_failed", error = %e, "prefix cache copy failed; prefilling in full")
                }
            }
        }
        // Free text gets the loop guard; a structured answer is bounded by its grammar and budget instead (a
        // cut would leave invalid JSON).
        let guard = if grammar.is_none() {
            LoopGuard::new(sampling.loop_ngram, sampling.loop_max_repeats)
        } else {
            LoopGuard::new(0, 0)
        };
        Ok(Seq {
            id,
            adapter,
            prompt: tokens,
            head,
            fed,
            reused: fed,
            next: None,
            sampler,
            guard,
            structured: grammar.is_some(),
            max_tokens: sampling.max_tokens,
            out: Vec::new(),
            sent: 0,
            produced: 0,
            stream,
            reply,
        })
    }

    /// One decoding step over every request (see the module docs).
    pub(super) fn step(&mut self) {
        self.drop_cancelled();
        let mut keys: Vec<AdapterKey> = Vec::new();
        for s in self.slots.iter().flatten() {
            let k = adapter_key(&s.adapter);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        for key in keys {
            if let Err(e) = self.step_group(key) {
                self.fail_group(key, &e);
            }
        }
    }

    fn drop_cancelled(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].as_ref().is_some_and(|s| s.reply.is_closed()) {
                if let Some(s) = self.slots[i].take() {
                    self.retire(s.id);
                    tracing::debug!(
                        event = "llm.sequence_cancelled",
                        seq = s.id,
                        "caller gone; sequence freed"
                    );
                }
            }
        }
    }

    /// One decode for the requests under one adapter, then one sampled token for each that has logits.
    fn step_group(&mut self, key: AdapterKey) -> Result<(), LlmError> {
        let group: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                self.slots[i]
                    .as_ref()
                    .is_some_and(|s| adapter_key(&s.adapter) == key)
            })
            .collect();
        let Some(adapter) = group
            .first()
            .and_then(|&i| self.slots[i].as_ref())
            .map(|s| s.adapter.clone())
        else {
            return Ok(());
        };
        set_adapter(&mut self.ctx, &mut self.active, adapter.as_ref())?;
        self.batch.clear();
        // (slot, batch index of its logits)
        let mut outputs: Vec<(usize, i32)> = Vec::new();
        // (slot, prompt tokens added this step)
        let mut prefilled: Vec<(usize, usize)> = Vec::new();
        for &i in &group {
            if let Some(s) = self.slots[i].as_ref() {
                if let Some(t) = s.next {
                    outputs.push((i, self.batch.n_tokens()));
                    self.batch
                        .add(t, s.pos() as i32, &[s.id], true)
                        .map_err(|e| LlmError::Backend(format!("batch: {e}")))?;
                }
            }
        }
        for &i in &group {
            let room = self.n_batch.saturating_sub(self.batch.n_tokens() as usize);
            let Some(s) = self.slots[i].as_ref() else {
                continue;
            };
            if s.next.is_some() || room == 0 {
                continue;
            }
            let end = (s.fed + room).min(s.prompt.len());
            for (p, t) in s.prompt.iter().enumerate().take(end).skip(s.fed) {
                let last = p + 1 == s.prompt.len();
                if last {
                    outputs.push((i, self.batch.n_tokens()));
                }
                self.batch
                    .add(*t, p as i32, &[s.id], last)
                    .map_err(|e| LlmError::Backend(format!("batch: {e}")))?;
            }
            prefilled.push((i, end));
        }
        if self.batch.n_tokens() == 0 {
            return Ok(());
        }
        let padded = self.pad(outputs.len())?;
        let decoded = self
            .ctx
            .decode(&mut self.batch)
            .map_err(|e| backend_err("decode")(e.to_string()));
        if let Some(scratch) = padded {
            self.remove_cells(scratch);
        }
        decoded?;
        for (i, end) in prefilled {
            let done = self.slots[i].as_mut().map(|s| {
                s.fed = end;
                end == s.prompt.len()
            });
            if done == Some(true) {
                self.remember_prompt(i);
            }
        }
        for (i, idx) in outputs {
            let Some(mut s) = self.slots[i].take() else {
                continue;
            };
            let tok = s.sampler.sample(&self.ctx, idx);
            match self.accept(&mut s, tok) {
                None => self.slots[i] = Some(s),
                Some(finish) => self.finish(s, finish),
            }
        }
        Ok(())
    }

    /// Adds a throwaway token (its own sequence, removed after the decode) to a batch with fewer than two
    /// outputs. llama.cpp's CPU matmuls take one kernel for a single row and another (llamafile's tiled
    /// one) for two or more, and the two round differently; with every decode at two rows or more, a
    /// request's numbers do not depend on what else is decoded beside it, so batching and prefix reuse
    /// change no token. It is appended last, so its cell is the newest and freeing it leaves no hole
    /// before a running request's next token.
    fn pad(&mut self, outputs: usize) -> Result<Option<i32>, LlmError> {
        let Some(scratch) = self.scratch else {
            return Ok(None);
        };
        if outputs >= 2 {
            return Ok(None);
        }
        self.batch
            .add(LlamaToken(0), 0, &[scratch], true)
            .map_err(|e| LlmError::Backend(format!("batch: {e}")))?;
        Ok(Some(scratch))
    }

    /// Takes one sampled token into a request's answer; says how the answer ends if it does.
    fn accept(&self, s: &mut Seq, tok: LlamaToken) -> Option<Finish> {
        let vocab = self.model.vocab();
        if vocab.is_eog(tok) {
            return Some(Finish::Stop);
        }
        vocab.token_to_piece_into(tok, &mut s.out, false, None);
        s.produced += 1;
        if let Some(cut) = s.guard.check(&s.out) {
            s.out.truncate(cut);
            return Some(Finish::Loop);
        }
        if let Some(sink) = &s.stream {
            // Only bytes no guard cut can take back, and only whole UTF-8 characters, leave.
            let safe = s.guard.committed();
            if safe > s.sent {
                let valid = match std::str::from_utf8(&s.out[s.sent..safe]) {
                    Ok(v) => v.len(),
                    Err(e) => e.valid_up_to(),
                };
                if valid > 0 {
                    let _ = sink
                        .send(String::from_utf8_lossy(&s.out[s.sent..s.sent + valid]).into_owned());
                    s.sent += valid;
                }
            }
        }
        s.next = Some(tok);
        if s.produced >= u64::from(s.max_tokens) || s.pos() + 1 >= self.n_ctx {
            return Some(Finish::Length);
        }
        None
    }

    /// Answers a finished request and frees its sequence.
    fn finish(&mut self, mut s: Seq, mut finish: Finish) {
        self.retire(s.id);
        // The last word closes its n-gram only now: a repeat that ends the answer is cut like any other.
        if finish != Finish::Loop {
            if let Some(cut) = s.guard.finish(&s.out) {
                s.out.truncate(cut);
                finish = Finish::Loop;
            }
        }
        if s.structured && finish == Finish::Length {
            let _ = s.reply.send(Err(LlmError::BadResponse(format!(
                "structured answer cut off at its budget of {} tokens (raise llm.max_tokens)",
                s.max_tokens
            ))));
            return;
        }
        if let Some(sink) = &s.stream {
            if s.sent < s.out.len() {
                let _ = sink.send(String::from_utf8_lossy(&s.out[s.sent..]).into_owned());
            }
        }
        tracing::debug!(
            event = "llm.sequence_done",
            seq = s.id,
            prompt = s.prompt.len(),
            reused = s.reused,
            produced = s.produced,
            "request decoded"
        );
        let _ = s.reply.send(Ok(Generated {
            text: String::from_utf8_lossy(&s.out).into_owned(),
            prompt_tokens: s.prompt.len() as u64,
            cached_tokens: s.reused as u64,
            completion_tokens: s.produced,
            finish,
        }));
    }

    /// Fails every request under one adapter (their decode failed) and frees their sequences.
    fn fail_group(&mut self, key: AdapterKey, e: &LlmError) {
        tracing::warn!(event = "llm.decode_failed", error = %e, "a batched decode failed; its requests fail");
        for i in 0..self.slots.len() {
            if self.slots[i]
                .as_ref()
                .is_some_and(|s| adapter_key(&s.adapter) == key)
            {
                if let Some(s) = self.slots[i].take() {
                    self.retire(s.id);
                    let _ = s.reply.send(Err(LlmError::Backend(e.to_string())));
                }
            }
        }
        // A failed decode may leave cells half-written: trust no cached prefix computed before it either.
        if let Some(c) = self.cache.as_mut() {
            for seq in c.forget_all() {
                let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
            }
        }
    }
}

fn adapter_key(a: &Active) -> AdapterKey {
    a.as_ref().map_or(0, |a| Arc::as_ptr(a) as AdapterKey)
}
