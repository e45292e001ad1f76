//! The sampler chain of one generation: llama.cpp's samplers in its usual order, built per request so each
//! sequence of the batched decoder samples as it would alone.
//!
//! Building a DRY sampler is not cheap: llama.cpp finds every vocabulary token that overlaps a sequence
//! breaker, a walk over all 49,152 tokens (~9 ms here), on the inference thread, so every other request's
//! decoding waited for it at each admission. [`DrySamplers`] builds it once per parameter set and hands out
//! clones (llama.cpp's clone copies the processed breakers; a never-used sampler's state is empty, so the
//! clone is the sampler a fresh build would give).

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;

use crate::llm::{LlmError, Sampling};

/// llama.cpp's default DRY sequence breakers: a repeat that crosses one of these does not grow.
const DRY_BREAKERS: [&str; 4] = ["\n", ":", "\"", "*"];

/// DRY samplers built once per parameter set, cloned per request (see the module docs).
#[derive(Default)]
pub(super) struct DrySamplers {
    /// (multiplier bits, base bits, allowed length, last n) → a never-used sampler.
    built: Vec<((u32, u32, i32, i32), LlamaSampler)>,
}

impl DrySamplers {
    /// Parameter sets kept at most: personas override sampling, but only a handful of sets exist.
    const MAX: usize = 16;

    fn get(
        &mut self,
        model: &LlamaModel,
        multiplier: f32,
        base: f32,
        allowed: i32,
        last_n: i32,
    ) -> LlamaSampler {
        let key = (multiplier.to_bits(), base.to_bits(), allowed, last_n);
        if let Some((_, s)) = self.built.iter().find(|(k, _)| *k == key) {
            return s.clone();
        }
        let s = LlamaSampler::dry(model, multiplier, base, allowed, last_n, DRY_BREAKERS);
        if self.built.len() >= Self::MAX {
            self.built.remove(0);
        }
        self.built.push((key, s.clone()));
        s
    }
}

/// The sampler chain of one generation, in llama.cpp's usual order (see [`Sampling`]): grammar →
/// repeat penalty → DRY → top-k → top-p → min-p → temperature → draw (or greedy at temperature 0).
pub(super) fn sampler_chain(
    model: &LlamaModel,
    dry: &mut DrySamplers,
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
        chain.push(dry.get(model, s.dry_multiplier, s.dry_base, allowed, last_n));
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
