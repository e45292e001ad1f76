//! The prompt-prefix cache: which recent prompts still have their KV cache in the decoder's context, and
//! which of them shares the longest prefix with a new prompt.
//!
//! Each entry owns one llama.cpp sequence id holding the KV cells of a prompt that was prefilled earlier
//! (copied there from the request's own sequence when its prefill finished; in a unified KV cache the copy
//! only tags the same cells with a second id, so it costs no compute and no memory until the request's own
//! sequence is freed). A new prompt copies the longest matching prefix into its sequence and prefills only
//! the rest. Entries are keyed by adapter as well as tokens: KV computed under one adapter is wrong under
//! another. The cache is bounded twice, by entries (sequence ids are a fixed range) and by tokens (cells,
//! counted as if no two entries shared any, so the bound is never exceeded), and evicts the least recently
//! used entry first — down to its *head* first: a prompt can name how many of its leading tokens are its
//! stable head (a persona's system message: its principles, the tool preamble), and an entry evicted for room
//! is cut back to that head rather than dropped, unless another entry (or the prompt being stored) holds the
//! same head. So the part every call of a persona shares outlives the task-specific rest, and the cache's
//! cells — which every decode step scans, masked, in llama.cpp's unified KV cache — go to what is reused.
//!
//! This file only decides; the decoder carries the decisions out on its context (copy, remove). That keeps
//! the policy testable without a model.

use llama_cpp_2::token::LlamaToken;

/// What an adapter is to the cache: `0` for the base model, otherwise the adapter's address (adapters are
/// loaded once and kept for the backend's life, so the address is a stable identity).
pub(super) type AdapterKey = usize;

/// One cached prompt.
#[derive(Debug)]
struct Entry {
    seq: i32,
    adapter: AdapterKey,
    tokens: Vec<LlamaToken>,
    /// Leading tokens worth keeping when the rest is evicted (0: none).
    keep: usize,
    /// Logical clock of the last hit or insert (larger is more recent).
    used: u64,
}

/// The decision of [`PrefixCache::insert`]: copy the prompt's `len` cells into `store` after removing every
/// sequence in `drop` (evicted or superseded entries) and the cells from position `p` on of each `(seq, p)`
/// in `trim` (entries cut back to their head).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Insert {
    pub(super) store: i32,
    pub(super) len: usize,
    pub(super) drop: Vec<i32>,
    pub(super) trim: Vec<(i32, usize)>,
}

/// The prefix cache's bookkeeping (see the module docs).
#[derive(Debug)]
pub(super) struct PrefixCache {
    entries: Vec<Entry>,
    free: Vec<i32>,
    max_tokens: usize,
    min_tokens: usize,
    clock: u64,
}

impl PrefixCache {
    /// A cache over the sequence ids `seqs` (one entry each), holding at most `max_tokens` cells, that reuses
    /// prefixes of at least `min_tokens` tokens (a shorter copy saves less than it costs to find).
    pub(super) fn new(seqs: std::ops::Range<i32>, max_tokens: usize, min_tokens: usize) -> Self {
        Self {
            entries: Vec::new(),
            free: seqs.rev().collect(),
            max_tokens,
            min_tokens: min_tokens.max(1),
            clock: 0,
        }
    }

    /// Cells held by all entries (an upper bound: shared cells are counted once per entry).
    pub(super) fn tokens(&self) -> usize {
        self.entries.iter().map(|e| e.tokens.len()).sum()
    }

    /// The entry sharing the longest prefix with `prompt` under `adapter`: its sequence and how many leading
    /// tokens to copy from it. At most `prompt.len() - 1`, so the last prompt token is always decoded (its
    /// logits choose the first answer token). `None` when no entry shares `min_tokens`.
    pub(super) fn lookup(
        &mut self,
        adapter: AdapterKey,
        prompt: &[LlamaToken],
    ) -> Option<(i32, usize)> {
        let limit = prompt.len().saturating_sub(1);
        let (i, len) = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.adapter == adapter)
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt).min(limit)))
            .max_by_key(|&(i, len)| (len, self.entries[i].used))?;
        if len < self.min_tokens {
            return None;
        }
        self.clock += 1;
        self.entries[i].used = self.clock;
        Some((self.entries[i].seq, len))
    }

    /// Records that `prompt` (prefilled under `adapter`; its first `keep` tokens its stable head, 0 for none)
    /// is worth keeping, and says where to copy it. `None` when nothing needs storing: the prompt is too short
    /// or too long for the cache, or an entry already holds it or a longer prompt that starts with it (that
    /// entry is marked used).
    pub(super) fn insert(
        &mut self,
        adapter: AdapterKey,
        prompt: &[LlamaToken],
        keep: usize,
    ) -> Option<Insert> {
        if prompt.len() < self.min_tokens || prompt.len() > self.max_tokens {
            return None;
        }
        self.clock += 1;
        let now = self.clock;
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.adapter == adapter && e.tokens.starts_with(prompt))
        {
            e.used = now;
            return None;
        }
        let mut drop = Vec::new();
        // An entry the new prompt extends (a task's transcript that grew) is superseded by it.
        while let Some(i) = self
            .entries
            .iter()
            .position(|e| e.adapter == adapter && prompt.starts_with(&e.tokens))
        {
            let e = self.entries.swap_remove(i);
            self.free.push(e.seq);
            drop.push(e.seq);
        }
        let mut trim = Vec::new();
        while self.free.is_empty() || self.tokens() + prompt.len() > self.max_tokens {
            let Some(i) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.used)
                .map(|(i, _)| i)
            else {
                break;
            };
            // Room in tokens (not in ids) can come from cutting the entry back to its head.
            if !self.free.is_empty() && self.head_only_here(i, adapter, prompt) {
                let e = &mut self.entries[i];
                e.tokens.truncate(e.keep);
                trim.push((e.seq, e.keep));
                continue;
            }
            let e = self.entries.swap_remove(i);
            self.free.push(e.seq);
            drop.push(e.seq);
        }
        let store = self.free.pop()?;
        self.entries.push(Entry {
            seq: store,
            adapter,
            tokens: prompt.to_vec(),
            keep: if keep >= self.min_tokens && keep < prompt.len() {
                keep
            } else {
                0
            },
            used: now,
        });
        Some(Insert {
            store,
            len: prompt.len(),
            drop,
            trim,
        })
    }

    /// Whether entry `i` has a head beyond which it can be cut, and nothing else — no other entry of its
    /// adapter, nor `prompt` (about to be stored under `adapter`) — holds that head.
    fn head_only_here(&self, i: usize, adapter: AdapterKey, prompt: &[LlamaToken]) -> bool {
        let e = &self.entries[i];
        if e.keep == 0 || e.keep >= e.tokens.len() {
            return false;
        }
        let head = &e.tokens[..e.keep];
        let held_by = |a: AdapterKey, t: &[LlamaToken]| a == e.adapter && t.starts_with(head);
        !held_by(adapter, prompt)
            && !self
                .entries
                .iter()
                .enumerate()
                .any(|(j, o)| j != i && held_by(o.adapter, &o.tokens))
    }

    /// Forgets every entry, freeing their ids; returns the sequences whose cells the decoder must remove.
    pub(super) fn forget_all(&mut self) -> Vec<i32> {
        let seqs: Vec<i32> = self.entries.drain(..).map(|e| e.seq).collect();
        self.free.extend(&seqs);
        seqs
    }
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(v: &[i32]) -> Vec<LlamaToken> {
        v.iter().map(|&t| LlamaToken(t)).collect()
    }

    fn seq(n: i32, start: i32) -> Vec<LlamaToken> {
        toks(&(start..start + n).collect::<Vec<_>>())
    }

    #[test]
    fn the_longest_shared_prefix_wins_and_the_last_token_is_always_decoded() {
        let mut c = PrefixCache::new(10..14, 1000, 4);
        let principles = seq(20, 0);
        let mut a = principles.clone();
        a.extend(toks(&[100, 101, 102]));
        let ins = c.insert(0, &a, 0).expect("stored");
        assert_eq!((ins.len, ins.drop.len()), (23, 0));
        // Same principles, a different question: the 20 shared tokens are reused.
        let mut b = principles.clone();
        b.extend(toks(&[200, 201]));
        assert_eq!(c.lookup(0, &b), Some((ins.store, 20)));
        // The very same prompt: all but its last token.
        assert_eq!(c.lookup(0, &a), Some((ins.store, 22)));
        // Another adapter's KV is never reused, and a short match is not worth it.
        assert_eq!(c.lookup(7, &a), None);
        assert_eq!(c.lookup(0, &toks(&[0, 1, 2, 9, 9, 9])), None);
    }

    #[test]
    fn a_grown_transcript_supersedes_its_shorter_self_and_a_prefix_of_an_entry_is_not_stored_again()
    {
        let mut c = PrefixCache::new(0..4, 1000, 2);
        let first = seq(10, 0);
        let s1 = c.insert(0, &first, 0).expect("stored").store;
        let grown = seq(30, 0);
        let ins = c.insert(0, &grown, 0).expect("stored");
        assert_eq!(ins.drop, vec![s1], "the shorter transcript goes");
        assert_eq!(c.tokens(), 30);
        assert_eq!(
            c.insert(0, &first, 0),
            None,
            "already held inside the grown one"
        );
        assert_eq!(c.tokens(), 30);
    }

    #[test]
    fn eviction_is_least_recently_used_and_keeps_both_bounds() {
        let mut c = PrefixCache::new(0..3, 100, 1);
        let a = c.insert(0, &seq(40, 0), 0).expect("a").store;
        let b = c.insert(0, &seq(40, 1000), 0).expect("b").store;
        // Touch a, so b is the oldest.
        assert!(c.lookup(0, &seq(41, 0)).is_some());
        let ins = c.insert(0, &seq(40, 2000), 0).expect("c");
        assert_eq!(
            ins.drop,
            vec![b],
            "the token bound evicts the least recently used"
        );
        assert!(c.tokens() <= 100);
        let d = c.insert(0, &seq(10, 3000), 0).expect("d");
        assert!(d.drop.is_empty());
        // Three ids, all in use: a fourth evicts the oldest (a was touched before c and d were stored).
        let e = c.insert(0, &seq(5, 4000), 0).expect("e");
        assert_eq!(e.drop, vec![a]);
        assert_eq!(e.store, a, "the freed id is reused");
        assert_eq!(
            c.insert(0, &seq(101, 5000), 0),
            None,
            "longer than the whole cache"
        );
    }

    #[test]
    fn an_evicted_prompt_keeps_its_head_unless_something_else_holds_it() {
        // Two personas' principles (30 tokens each), then each one's task-specific rest.
        let alfred = seq(30, 0);
        let robin = seq(30, 500);
        let with = |head: &[LlamaToken], rest: i32| {
            let mut p = head.to_vec();
            p.extend(seq(40, rest));
            p
        };
        let mut c = PrefixCache::new(0..8, 180, 4);
        let a1 = c.insert(0, &with(&alfred, 1000), 30).expect("a1").store;
        let r1 = c.insert(0, &with(&robin, 2000), 30).expect("r1").store;
        // A third prompt needs room: ALFRED's (the oldest) is cut back to its principles, not dropped.
        let ins = c.insert(0, &with(&seq(30, 900), 3000), 30).expect("x");
        assert_eq!(
            (ins.drop.clone(), ins.trim.clone()),
            (vec![], vec![(a1, 30)])
        );
        assert_eq!(c.tokens(), 30 + 70 + 70);
        // ...and still serves ALFRED's next call, whatever its question.
        assert_eq!(c.lookup(0, &with(&alfred, 7000)), Some((a1, 30)));
        // A new ROBIN prompt carries ROBIN's head itself: the old ROBIN entry, evicted, is dropped whole.
        let ins = c.insert(0, &with(&robin, 4000), 30).expect("r2");
        assert!(
            ins.drop.contains(&r1) && !ins.trim.iter().any(|&(s, _)| s == r1),
            "{ins:?}"
        );
        assert!(c.tokens() <= 180);
        // A head shorter than the reuse minimum is no head: such a prompt is dropped whole.
        let mut c = PrefixCache::new(0..8, 80, 4);
        let s = c
            .insert(0, &with(&alfred[..3], 1000), 3)
            .expect("short head")
            .store;
        let ins = c.insert(0, &with(&robin, 2000), 30).expect("robin");
        assert_eq!((ins.drop, ins.trim), (vec![s], vec![]));
    }

    #[test]
    fn forgetting_frees_every_id() {
        let mut c = PrefixCache::new(0..2, 100, 1);
        c.insert(0, &seq(5, 0), 0);
        c.insert(3, &seq(5, 0), 0);
        let mut gone = c.forget_all();
        gone.sort_unstable();
        assert_eq!(gone, vec![0, 1]);
        assert_eq!(c.tokens(), 0);
        assert!(c.insert(0, &seq(5, 9), 0).is_some());
    }
}
