//! The sampler chain of one generation: llama.cpp's samplers in its usual order, built per request so each
//! sequence of the batched decoder samples as it would alone.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;

use crate::llm::{LlmError, Sampling};

/// llama.cpp's default DRY sequence breakers: a repeat that crosses one of these does not grow.
const DRY_BREAKERS: [&str; 4] = ["\n", ":", "\"", "*"];

/// The sampler chain of one generation, in llama.cpp's usual order (see [`Sampling`]): grammar →
/// repeat penalty → DRY → top-k → top-p → min-p → temperature → draw (or greedy at temperature 0).
pub(super) fn sampler_chain(
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
