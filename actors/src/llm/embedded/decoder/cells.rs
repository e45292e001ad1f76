//! The decoder's KV cells outside a step: what the prefix cache keeps and hands out (its decisions are
//! `super::super::prefix`'s; these carry them out on the context), and freeing a sequence's cells — in
//! batch-invariant mode into the plug, so no hole opens (see the decoder's module docs).

use llama_cpp_2::token::LlamaToken;

use super::super::prefix::AdapterKey;
use super::{adapter_key, Decoder};

impl Decoder<'_> {
    /// Keeps a fully prefilled prompt in the prefix cache (a copy of its cells under a cache sequence).
    pub(super) fn remember_prompt(&mut self, i: usize) {
        // Out of its slot while stored (storing touches no slot), so the prompt is not copied.
        let Some(s) = self.slots[i].take() else {
            return;
        };
        self.store_prompt(s.id, adapter_key(&s.adapter), &s.prompt, s.head);
        self.slots[i] = Some(s);
    }

    /// Copies into sequence `id` (no cells yet) the cells of the longest cached prefix of `prompt` under the
    /// active adapter — at most `prompt.len() − 1`, so its last token is decoded — and answers how many; 0 with
    /// the cache off, nothing shared, or a failed copy. For a whole job on a free sequence (the gate's NLL).
    pub(in super::super) fn reuse_prefix(&mut self, id: i32, prompt: &[LlamaToken]) -> usize {
        let key = adapter_key(&self.active);
        let Some((from, len)) = self.cache.as_mut().and_then(|c| c.lookup(key, prompt)) else {
            return 0;
        };
        match self
            .ctx
            .copy_kv_cache_seq(from, id, Some(0), Some(len as u32))
        {
            Ok(()) => len,
            Err(e) => {
                tracing::warn!(event = "llm.prefix_copy_failed", error = %e, "prefix cache copy failed; decoding in full");
                0
            }
        }
    }

    /// Keeps `prompt`, decoded into sequence `id` under the active adapter, in the prefix cache.
    pub(in super::super) fn keep_prefix(&mut self, id: i32, prompt: &[LlamaToken]) {
        let key = adapter_key(&self.active);
        self.store_prompt(id, key, prompt, 0);
    }

    fn store_prompt(&mut self, id: i32, key: AdapterKey, prompt: &[LlamaToken], head: usize) {
        let Some(plan) = self
            .cache
            .as_mut()
            .and_then(|c| c.insert(key, prompt, head))
        else {
            return;
        };
        // Evicted entries go at once (their ids are reused right away); cells a request still shares stay.
        for d in plan.drop {
            self.free_cells(d, None);
        }
        for (seq, from) in plan.trim {
            if let Ok(from) = u32::try_from(from) {
                self.free_cells(seq, Some(from));
            }
        }
        if let Err(e) = self
            .ctx
            .copy_kv_cache_seq(id, plan.store, Some(0), Some(plan.len as u32))
        {
            tracing::warn!(event = "llm.prefix_store_failed", error = %e, "prefix cache store failed");
        }
    }

    /// Frees sequence `id`'s cells from position `from` on (all: `None`). In batch-invariant mode they are
    /// handed to the plug instead of removed, so no hole opens (see the module docs), while its room lasts.
    pub(super) fn free_cells(&mut self, id: i32, from: Option<u32>) {
        let Ok(seq) = u32::try_from(id) else { return };
        if let Some(plug) = self.plug {
            let max = self.ctx.kv_cache_seq_pos_max(id);
            let start = from.map_or(self.ctx.kv_cache_seq_pos_min(id), |f| {
                i32::try_from(f).unwrap_or(i32::MAX)
            });
            let n = usize::try_from(max - start.max(0) + 1).unwrap_or(0);
            if n == 0 || max < 0 {
                return;
            }
            if self.plugged + n <= self.plug_budget
                && self.ctx.copy_kv_cache_seq(id, plug, from, None).is_ok()
            {
                self.plugged += n;
            } else {
                tracing::debug!(event = "llm.cells_freed", seq = id, cells = n, plugged = self.plugged, "the plug is full: cells removed mid-run (batch invariance may not hold for a request running now)");
            }
        }
        let _ = self.ctx.clear_kv_cache_seq(Some(seq), from, None);
    }

    /// Removes a sequence's cells (cells another sequence shares stay).
    pub(super) fn remove_cells(&mut self, id: i32) {
        if let Ok(id) = u32::try_from(id) {
            let _ = self.ctx.clear_kv_cache_seq(Some(id), None, None);
        }
    }
}
