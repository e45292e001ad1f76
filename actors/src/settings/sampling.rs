//! Sampling, stated once: [`Sampling`] is every parameter of one model call, `[llm]` holds the defaults as
//! one, and every place that changes some of them for a persona says so with one [`SamplingOverrides`]
//! (`[personas.<name>]` in settings.toml, a persona's live edits through `update_persona`), applied on top
//! by [`SamplingOverrides::apply`]. Here, below `llm`, because the settings file is parsed into it.

use serde::{Deserialize, Serialize};

use super::Settings;

/// Sampling parameters of one model call: the one sampling type. `[llm]` holds one (its keys are these
/// fields, flattened into the table); see settings.toml for the shipped values and why.
///
/// The embedded chain, in order: grammar (when a format is asked) → repeat penalty → DRY → top-k → top-p →
/// min-p → temperature → draw (greedy at temperature 0: penalties still apply). Ollama gets the same values
/// as its options, except DRY and the loop guard, which it does not have.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Sampling {
    /// Temperature, >= 0; 0 (or less) makes the embedded backend sample greedily.
    pub temperature: f32,
    /// Nucleus mass, 0..=1: sample only among the likeliest tokens covering this much probability.
    pub top_p: f32,
    /// Sample only among the `top_k` likeliest tokens (0 = off).
    pub top_k: u32,
    /// Drop tokens less likely than `min_p` × the likeliest one's probability, 0..=1 (0 = off).
    pub min_p: f32,
    /// Logit divisor for tokens seen in the last `repeat_last_n` tokens (1 = off; > 1 discourages repeats).
    pub repeat_penalty: f32,
    /// Window, in tokens, of `repeat_penalty` and of the DRY sampler.
    pub repeat_last_n: u32,
    /// DRY ("don't repeat yourself") strength, embedded backend only (Ollama has no DRY); 0 = off.
    pub dry_multiplier: f32,
    /// DRY growth base: a repeat extending a seen sequence by n tokens costs `multiplier × base^(n - allowed)`.
    pub dry_base: f32,
    /// Repeated sequences up to this many tokens are free of DRY's penalty.
    pub dry_allowed_length: u32,
    /// Loop guard of the embedded backend: generation ends (the repeat cut off) when the last `loop_ngram`
    /// words (lower-cased, punctuation trimmed) have already occurred `loop_max_repeats` times in the answer;
    /// 0 = off. See `llm::embedded::guard`.
    pub loop_ngram: u32,
    /// Occurrences of one `loop_ngram`-word sequence an answer may hold.
    pub loop_max_repeats: u32,
    /// Sampler seed: as is to Ollama, as `u32` to llama.cpp; a fixed seed makes repeated requests sample
    /// alike.
    pub seed: i32,
    /// Most tokens to generate.
    pub max_tokens: u32,
}

impl Sampling {
    /// Plain sampling: temperature, nucleus, seed and budget only; every penalty, DRY and the loop guard off.
    pub fn plain(temperature: f32, top_p: f32, seed: i32, max_tokens: u32) -> Self {
        Self {
            temperature,
            top_p,
            top_k: 0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 0,
            dry_multiplier: 0.0,
            dry_base: 1.75,
            dry_allowed_length: 2,
            loop_ngram: 0,
            loop_max_repeats: 0,
            seed,
            max_tokens,
        }
    }

    /// The `[llm]` defaults with `persona`'s `[personas.<name>]` overrides applied.
    pub fn for_persona(s: &Settings, persona: &str) -> Self {
        match s.personas.get(persona) {
            Some(p) => p.sampling.apply(s.llm.sampling),
            None => s.llm.sampling,
        }
    }
}

/// Some of a [`Sampling`]'s parameters, each replacing the one beneath it when set: a persona's
/// `[personas.<name>]` table, or its live edits. The parameters a persona may tune; the backend-wide ones
/// (DRY, the loop guard, the seed) are `[llm]`'s alone.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct SamplingOverrides {
    /// Temperature instead of `llm.temperature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus mass instead of `llm.top_p`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// `top_k` instead of `llm.top_k`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// `min_p` instead of `llm.min_p`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    /// `repeat_penalty` instead of `llm.repeat_penalty`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f32>,
    /// Most tokens per model call (one graph step) instead of `llm.max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

impl SamplingOverrides {
    /// `base` with every parameter set here replaced.
    pub fn apply(&self, base: Sampling) -> Sampling {
        Sampling {
            temperature: self.temperature.unwrap_or(base.temperature),
            top_p: self.top_p.unwrap_or(base.top_p),
            top_k: self.top_k.unwrap_or(base.top_k),
            min_p: self.min_p.unwrap_or(base.min_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(base.repeat_penalty),
            max_tokens: self.max_tokens.unwrap_or(base.max_tokens),
            ..base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_replaces_only_what_it_sets() {
        let base = Sampling::plain(0.7, 0.9, 42, 128);
        assert_eq!(SamplingOverrides::default().apply(base), base);
        let o = SamplingOverrides {
            temperature: Some(0.0),
            max_tokens: Some(16),
            ..Default::default()
        };
        let s = o.apply(base);
        assert_eq!((s.temperature, s.max_tokens), (0.0, 16));
        assert_eq!(
            Sampling {
                temperature: 0.7,
                max_tokens: 128,
                ..s
            },
            base
        );
    }
}
