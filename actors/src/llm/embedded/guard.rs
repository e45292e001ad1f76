//! The loop guard: the last line of defence against degenerate generation ("The answer must be a coin. The
//! answer must be a coin. …"). The repeat penalty and DRY make repeats unlikely; this makes a long one
//! impossible. It reads the answer as words (split at whitespace, lower-cased, punctuation trimmed — so "Very
//! Good Question." repeats "very good question"): each completed word closes an n-gram of the last `n` words,
//! and when that n-gram has already occurred `max_repeats` times, generation ends and the occurrence being
//! written is cut off at its first word. So an answer holds each `n`-word sequence at most `max_repeats` times.
//!
//! Words rather than tokens: the same words come out as different tokens (case, a leading space), which a
//! token-level guard misses — SmolLM2 did exactly that in the 20-question test.
//!
//! Bytes leave the worker only once no cut can take them back: [`LoopGuard::committed`] is the start of the
//! earliest word a future n-gram can begin with.

use std::collections::HashMap;

/// Counts word n-grams of one answer.
#[derive(Debug)]
pub struct LoopGuard {
    n: usize,
    max_repeats: u32,
    /// Bytes of the answer scanned for words so far.
    scanned: usize,
    /// Start of the word being read, if any.
    word_start: Option<usize>,
    /// Completed words: (byte offset where the word starts, normalised word).
    words: Vec<(usize, String)>,
    counts: HashMap<Vec<String>, u32>,
}

impl LoopGuard {
    /// A guard over `n`-word sequences allowing `max_repeats` occurrences each; `n == 0` or
    /// `max_repeats == 0` turns it off.
    pub fn new(n: u32, max_repeats: u32) -> Self {
        Self {
            n: if max_repeats == 0 { 0 } else { n as usize },
            max_repeats,
            scanned: 0,
            word_start: None,
            words: Vec::new(),
            counts: HashMap::new(),
        }
    }

    /// Reads what `answer` (the whole answer so far) added since the last call. `Some(cut)` means a loop:
    /// keep only `answer[..cut]` and stop.
    pub fn check(&mut self, answer: &[u8]) -> Option<usize> {
        if self.n == 0 {
            self.scanned = answer.len();
            return None;
        }
        while self.scanned < answer.len() {
            let i = self.scanned;
            self.scanned += 1;
            if !answer[i].is_ascii_whitespace() {
                self.word_start.get_or_insert(i);
                continue;
            }
            let Some(start) = self.word_start.take() else {
                continue;
            };
            let word: String = String::from_utf8_lossy(&answer[start..i])
                .trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase();
            if word.is_empty() {
                continue;
            }
            self.words.push((start, word));
            if let Some(cut) = self.count_last() {
                return Some(cut);
            }
        }
        None
    }

    /// Reads the end of the answer: its last word, which no whitespace follows, closes an n-gram too. Without
    /// this a third occurrence that ends the answer (the model stopping right after it) would pass uncounted.
    /// `Some(cut)` as for [`LoopGuard::check`].
    pub fn finish(&mut self, answer: &[u8]) -> Option<usize> {
        if let Some(cut) = self.check(answer) {
            return Some(cut);
        }
        if self.n == 0 {
            return None;
        }
        let start = self.word_start.take()?;
        let word: String = String::from_utf8_lossy(&answer[start..])
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase();
        if word.is_empty() {
            return None;
        }
        self.words.push((start, word));
        self.count_last()
    }

    /// Counts the n-gram the last word closed; `Some(start of its first word)` once it is one too many.
    fn count_last(&mut self) -> Option<usize> {
        let len = self.words.len();
        if len < self.n {
            return None;
        }
        let gram: Vec<String> = self.words[len - self.n..]
            .iter()
            .map(|(_, w)| w.clone())
            .collect();
        let seen = self.counts.entry(gram).or_insert(0);
        *seen += 1;
        (*seen > self.max_repeats).then(|| self.words[len - self.n].0)
    }

    /// Bytes of the answer no later cut can remove: everything before the first word of the next n-gram
    /// (all of it when the guard is off).
    pub fn committed(&self) -> usize {
        if self.n == 0 {
            return self.scanned;
        }
        let len = self.words.len();
        if len + 1 < self.n {
            return 0;
        }
        self.words[len + 1 - self.n].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `text` in pieces of `step` bytes; returns where the guard cut, if it did.
    fn run(g: &mut LoopGuard, text: &str, step: usize) -> Option<usize> {
        let b = text.as_bytes();
        let mut end = 0;
        while end < b.len() {
            end = (end + step).min(b.len());
            if let Some(cut) = g.check(&b[..end]) {
                return Some(cut);
            }
            assert!(g.committed() <= end);
        }
        None
    }

    #[test]
    fn a_third_occurrence_is_cut_at_its_first_word_whatever_the_case() {
        let text = "This is a very good question! This is a Very Good Question. This is a very good question, too.";
        for step in [1, 3, 7, 100] {
            let mut g = LoopGuard::new(6, 2);
            let cut = run(&mut g, text, step).expect("a loop");
            assert_eq!(
                &text[..cut],
                "This is a very good question! This is a Very Good Question. ",
                "step {step}"
            );
        }
    }

    #[test]
    fn a_third_occurrence_that_ends_the_answer_is_cut_too() {
        // What SmolLM2 once wrote (CI, 2026-12-02): the third repeat was the answer's last six words.
        let text = "The architect's response was so clever. Indeed the architect's response was so clever! \
                    Truly, the architect's response was so clever.";
        for step in [1, 4, 100] {
            let mut g = LoopGuard::new(6, 2);
            assert_eq!(
                run(&mut g, text, step),
                None,
                "no whitespace closes the last word"
            );
            let cut = g.finish(text.as_bytes()).expect("a loop at the end");
            assert_eq!(
                &text[..cut],
                "The architect's response was so clever. Indeed the architect's response was so clever! \
                 Truly, ",
                "step {step}"
            );
        }
        let mut g = LoopGuard::new(6, 2);
        let fine = "The architect's response was so clever. Indeed the architect's response was so clever!";
        assert_eq!(run(&mut g, fine, 3), None);
        assert_eq!(g.finish(fine.as_bytes()), None);
        let mut off = LoopGuard::new(0, 0);
        assert_eq!(off.finish(text.as_bytes()), None);
    }

    #[test]
    fn varied_text_and_a_disabled_guard_never_stop() {
        let text: String = (0..300).map(|i| format!("w{i} ")).collect();
        let mut g = LoopGuard::new(6, 2);
        assert_eq!(run(&mut g, &text, 5), None);
        // The next 6-gram starts 5 words before the end: those stay held back.
        assert_eq!(
            g.committed(),
            text.len() - "w295 w296 w297 w298 w299 ".len()
        );
        let same = "again ".repeat(300);
        let mut off = LoopGuard::new(0, 2);
        assert_eq!(run(&mut off, &same, 5), None);
        assert_eq!(off.committed(), same.len());
        let mut off = LoopGuard::new(6, 0);
        assert_eq!(run(&mut off, &same, 5), None);
    }
}
