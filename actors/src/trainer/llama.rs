//! The llama architecture of the embedded model, in candle, with LoRA on chosen projections.
//!
//! Weights come from the same GGUF file llama.cpp serves, dequantized to f32 and frozen (plain tensors, not
//! `Var`s, so autograd never tracks them). Every op on the way from a LoRA matrix to the loss has a backward
//! pass: the RMS norms, the projections with and without LoRA, attention (RoPE, grouped heads, the causal
//! softmax within each packed sequence), the SiLU-gated product and the loss through the tied vocabulary
//! projection are the trainer's own fused ops with hand-written backward passes that keep only their outputs
//! ([`super::fused`]; candle's own fused kernels have no backward, ground facts). The GGUF q/k weights are
//! already permuted for llama.cpp's adjacent-pair RoPE, which is what [`super::fused::attention`] turns by
//! (candle's `rope_i`), so the trained q/k LoRA matrices need no permutation on export.
//!
//! What llama.cpp computes differently, and why parity holds only to a tolerance: it multiplies Q4_1 weights
//! by activations quantized to 8 bits, where this model multiplies the dequantized weights in f32.

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor, Var};

use super::fused::{
    attention, frozen, lora, positions, rms_norm, silu_mul, tied_nll, Heads, RopeTables, Segment,
};
use super::TrainerError;

/// The projections LoRA can adapt, by their GGUF names (`blk.N.<name>.weight`).
pub const TARGETS: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

/// The shape of a llama model, read from its GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Transformer blocks.
    pub n_layer: usize,
    /// Hidden width.
    pub n_embd: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_head`).
    pub n_head_kv: usize,
    /// Feed-forward width.
    pub n_ff: usize,
    /// Vocabulary size (rows of `token_embd`).
    pub vocab: usize,
    /// RMS-norm epsilon.
    pub rms_eps: f64,
    /// RoPE frequency base.
    pub rope_base: f64,
}

impl LlamaConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// `(n_out, n_in)` of a target projection.
    pub fn shape_of(&self, target: &str) -> Option<(usize, usize)> {
        let kv = self.n_head_kv * self.head_dim();
        Some(match target {
            "attn_q" | "attn_output" => (self.n_embd, self.n_embd),
            "attn_k" | "attn_v" => (kv, self.n_embd),
            "ffn_gate" | "ffn_up" => (self.n_ff, self.n_embd),
            "ffn_down" => (self.n_embd, self.n_ff),
            _ => return None,
        })
    }

    fn from_gguf(c: &gguf_file::Content) -> Result<Self, TrainerError> {
        let arch = meta(c, "general.architecture")?
            .to_string()
            .map_err(model_err)?
            .clone();
        if arch != "llama" {
            return Err(TrainerError::Model(format!(
                "the trainer knows the llama architecture, the model is `{arch}`"
            )));
        }
        let u = |k: &str| -> Result<usize, TrainerError> {
            Ok(meta(c, &format!("llama.{k}"))?
                .to_u32()
                .map_err(model_err)? as usize)
        };
        let f = |k: &str| -> Result<f64, TrainerError> {
            Ok(meta(c, &format!("llama.{k}"))?
                .to_f32()
                .map_err(model_err)? as f64)
        };
        let vocab = c
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims()[0])
            .ok_or_else(|| TrainerError::Model("no token_embd.weight".into()))?;
        let cfg = Self {
            n_layer: u("block_count")?,
            n_embd: u("embedding_length")?,
            n_head: u("attention.head_count")?,
            n_head_kv: u("attention.head_count_kv")?,
            n_ff: u("feed_forward_length")?,
            vocab,
            rms_eps: f("attention.layer_norm_rms_epsilon")?,
            rope_base: f("rope.freq_base").unwrap_or(10_000.0),
        };
        if cfg.n_head == 0 || cfg.n_head_kv == 0 || !cfg.n_head.is_multiple_of(cfg.n_head_kv) {
            return Err(TrainerError::Model(format!(
                "{} heads cannot share {} key/value heads",
                cfg.n_head, cfg.n_head_kv
            )));
        }
        Ok(cfg)
    }
}

fn meta<'a>(c: &'a gguf_file::Content, key: &str) -> Result<&'a gguf_file::Value, TrainerError> {
    c.metadata
        .get(key)
        .ok_or_else(|| TrainerError::Model(format!("the model file has no `{key}`")))
}

pub(super) fn model_err(e: candle_core::Error) -> TrainerError {
    TrainerError::Model(e.to_string())
}

/// How LoRA is laid on the model: which projections, rank, alpha (scale = alpha / rank) and input dropout.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    /// Names from [`TARGETS`].
    pub targets: Vec<String>,
    /// Rank of the update `B·A`.
    pub rank: usize,
    /// The update is scaled by `alpha / rank` (llama.cpp reads `adapter.lora.alpha` the same way).
    pub alpha: f32,
    /// Probability of zeroing an input element of the LoRA path while training (0 = off).
    pub dropout: f32,
    /// Seed of the `A` matrices' initial values (the same seed gives the same start).
    pub seed: u64,
}

/// One LoRA pair: `A` (rank × n_in, small random) and `B` (n_out × rank, zero, so training starts exactly at
/// the base model).
#[derive(Debug, Clone)]
pub struct LoraPair {
    /// Down-projection.
    pub a: Var,
    /// Up-projection.
    pub b: Var,
}

/// A frozen projection with its optional LoRA pair.
struct Linear {
    /// `(n_out, n_in)`.
    w: Tensor,
    lora: Option<LoraPair>,
}

struct Block {
    attn_norm: Tensor,
    ffn_norm: Tensor,
    /// In [`TARGETS`] order.
    proj: [Linear; 7],
}

/// The model: frozen f32 weights and the trainable LoRA pairs.
pub struct LlamaLora {
    /// Its shape.
    pub cfg: LlamaConfig,
    spec: LoraSpec,
    embd: Tensor,
    out_norm: Tensor,
    blocks: Vec<Block>,
    device: Device,
    /// The current step's dropout seed and how many masks it has drawn ([`LlamaLora::seed_dropout`]).
    dropout_step: AtomicU64,
    dropout_draws: AtomicU64,
}

impl LlamaLora {
    /// Loads `reader` (a llama GGUF), dequantizing every weight to f32, and lays fresh LoRA pairs on
    /// `spec.targets` (A drawn from N(0, 1/n_in), B zero).
    pub fn load<R: Read + Seek>(reader: &mut R, spec: LoraSpec) -> Result<Self, TrainerError> {
        let device = Device::Cpu;
        let content = gguf_file::Content::read(reader).map_err(model_err)?;
        let cfg = LlamaConfig::from_gguf(&content)?;
        for t in &spec.targets {
            if !TARGETS.contains(&t.as_str()) {
                return Err(TrainerError::Invalid(format!(
                    "`{t}` is not a projection LoRA can adapt (one of {})",
                    TARGETS.join(", ")
                )));
            }
        }
        if spec.rank == 0 {
            return Err(TrainerError::Invalid(
                "the LoRA rank must be at least 1".into(),
            ));
        }
        let mut get = |name: &str| -> Result<Tensor, TrainerError> {
            content
                .tensor(reader, name, &device)
                .and_then(|q| q.dequantize(&device))
                .map_err(|e| TrainerError::Model(format!("{name}: {e}")))
        };
        let embd = get("token_embd.weight")?;
        let out_norm = get("output_norm.weight")?;
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let mut lin = |t: &str| -> Result<Linear, TrainerError> {
                let w = get(&format!("blk.{i}.{t}.weight"))?;
                let (n_out, n_in) = cfg.shape_of(t).unwrap_or((0, 0));
                if w.dims() != [n_out, n_in] {
                    return Err(TrainerError::Model(format!(
                        "blk.{i}.{t}.weight is {:?}, the metadata says {:?}",
                        w.dims(),
                        [n_out, n_in]
                    )));
                }
                let lora = if spec.targets.iter().any(|x| x == t) {
                    let seed = spec.seed
                        ^ ((i as u64) << 8
                            | TARGETS.iter().position(|x| x == &t).unwrap_or(0) as u64);
                    let a = gaussian(seed, (1.0 / n_in as f64).sqrt(), (spec.rank, n_in), &device)?;
                    let b = Tensor::zeros((n_out, spec.rank), DType::F32, &device)
                        .map_err(model_err)?;
                    Some(LoraPair {
                        a: Var::from_tensor(&a).map_err(model_err)?,
                        b: Var::from_tensor(&b).map_err(model_err)?,
                    })
                } else {
                    None
                };
                Ok(Linear { w, lora })
            };
            let proj = [
                lin(TARGETS[0])?,
                lin(TARGETS[1])?,
                lin(TARGETS[2])?,
                lin(TARGETS[3])?,
                lin(TARGETS[4])?,
                lin(TARGETS[5])?,
                lin(TARGETS[6])?,
            ];
            blocks.push(Block {
                attn_norm: get(&format!("blk.{i}.attn_norm.weight"))?,
                ffn_norm: get(&format!("blk.{i}.ffn_norm.weight"))?,
                proj,
            });
        }
        Ok(Self {
            cfg,
            spec,
            embd,
            out_norm,
            blocks,
            device,
            dropout_step: AtomicU64::new(0),
            dropout_draws: AtomicU64::new(0),
        })
    }

    /// Starts step `step`'s dropout masks: every mask the passes after this draw is a function of `run_seed`,
    /// `step` and its place in the order of draws (layers and projections in order, pass after pass), so a run
    /// resumed at a step draws the masks the uninterrupted run drew there — resume is exact with dropout on.
    pub fn seed_dropout(&self, run_seed: u64, step: usize) {
        self.dropout_step
            .store(mix(run_seed, step as u64), Ordering::SeqCst);
        self.dropout_draws.store(0, Ordering::SeqCst);
    }

    /// The next mask's seed of the current step.
    fn next_dropout_seed(&self) -> u64 {
        let n = self.dropout_draws.fetch_add(1, Ordering::SeqCst);
        mix(self.dropout_step.load(Ordering::SeqCst), n)
    }

    /// Every frozen weight by its GGUF name (tests check that no gradient reaches them).
    #[cfg(test)]
    pub(super) fn frozen(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![
            ("token_embd.weight".to_string(), self.embd.clone()),
            ("output_norm.weight".to_string(), self.out_norm.clone()),
        ];
        for (i, b) in self.blocks.iter().enumerate() {
            out.push((format!("blk.{i}.attn_norm.weight"), b.attn_norm.clone()));
            out.push((format!("blk.{i}.ffn_norm.weight"), b.ffn_norm.clone()));
            for (t, p) in TARGETS.iter().zip(&b.proj) {
                out.push((format!("blk.{i}.{t}.weight"), p.w.clone()));
            }
        }
        out
    }

    /// The LoRA spec in use.
    pub fn spec(&self) -> &LoraSpec {
        &self.spec
    }

    /// Every LoRA pair by its GGUF weight name (`blk.N.attn_q.weight`), in a stable order.
    pub fn lora(&self) -> BTreeMap<String, &LoraPair> {
        let mut out = BTreeMap::new();
        for (i, b) in self.blocks.iter().enumerate() {
            for (t, p) in TARGETS.iter().zip(&b.proj) {
                if let Some(l) = &p.lora {
                    out.insert(format!("blk.{i}.{t}.weight"), l);
                }
            }
        }
        out
    }

    /// The trainable variables (A then B of every pair, in [`lora`](Self::lora) order).
    pub fn vars(&self) -> Vec<Var> {
        self.lora()
            .values()
            .flat_map(|p| [p.a.clone(), p.b.clone()])
            .collect()
    }

    /// Replaces the pairs' values (resuming from a checkpoint, or loading an exported adapter): `values`
    /// maps GGUF weight names to `(A, B)`; every adapted projection must be present, with its shapes.
    pub fn set_lora(
        &self,
        values: &BTreeMap<String, (Tensor, Tensor)>,
    ) -> Result<(), TrainerError> {
        for (name, pair) in self.lora() {
            let (a, b) = values
                .get(&name)
                .ok_or_else(|| TrainerError::Model(format!("no LoRA values for {name}")))?;
            if a.dims() != pair.a.dims() || b.dims() != pair.b.dims() {
                return Err(TrainerError::Model(format!(
                    "{name}: LoRA shapes {:?}/{:?}, expected {:?}/{:?}",
                    a.dims(),
                    b.dims(),
                    pair.a.dims(),
                    pair.b.dims()
                )));
            }
            pair.a.set(a).map_err(model_err)?;
            pair.b.set(b).map_err(model_err)?;
        }
        Ok(())
    }

    /// Logits `(batch, seq, vocab)` for `tokens` `(batch, seq)` (u32). `train` turns LoRA dropout on.
    pub fn forward(&self, tokens: &Tensor, train: bool) -> Result<Tensor, TrainerError> {
        self.hidden(tokens, train).and_then(|h| self.logits(&h))
    }

    /// The last hidden states `(batch, seq, n_embd)`, after the output norm: project only the rows whose
    /// next token counts ([`logits`](Self::logits)) — the vocabulary projection and its softmax are the widest
    /// tensors of a step, and a prompt's rows are never scored.
    pub fn hidden(&self, tokens: &Tensor, train: bool) -> Result<Tensor, TrainerError> {
        let t = tokens.dims2().map_err(model_err)?.1;
        self.hidden_packed(tokens, &[t], train)
    }

    /// The same for several sequences packed into one row: `tokens` is `(1, Σ lengths)`, `lengths` their
    /// lengths in order. Each sequence attends only to itself and counts its positions from 0, so the result is
    /// row for row what [`hidden`](Self::hidden) gives each alone; the projections, where nearly all of a step's
    /// work is, run once over every row (matrix products on 4× the rows run at a better rate, and the weights
    /// are packed once, not once per sequence).
    pub fn hidden_packed(
        &self,
        tokens: &Tensor,
        lengths: &[usize],
        train: bool,
    ) -> Result<Tensor, TrainerError> {
        self.hidden_segments(tokens, &Segment::independent(lengths), train)
    }

    /// The same for a row of [`Segment`]s: a segment that continues another (a shared prefix) sees all of it
    /// and counts its positions on from its length, so its rows are what [`hidden`](Self::hidden) gives the
    /// prefix and it joined — the prefix computed once for all its continuations.
    pub fn hidden_segments(
        &self,
        tokens: &Tensor,
        layout: &[Segment],
        train: bool,
    ) -> Result<Tensor, TrainerError> {
        let (b, t) = tokens.dims2().map_err(model_err)?;
        let covers =
            layout.iter().map(|s| s.len).sum::<usize>() == t && (b == 1 || layout.len() == 1);
        let Some(positions) = positions(layout).filter(|_| covers) else {
            return Err(TrainerError::Invalid(format!(
                "packed segments {layout:?} do not cover a ({b}, {t}) batch"
            )));
        };
        self.hidden_inner(tokens, layout, positions, train)
            .map_err(model_err)
    }

    /// Logits `(.., vocab)` of hidden states `(.., n_embd)` (tied embeddings: the projection is `token_embd`).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor, TrainerError> {
        hidden
            .broadcast_matmul(&self.embd.t().map_err(model_err)?)
            .map_err(model_err)
    }

    /// The NLL `(rows,)` of each row of `hidden` `(rows, n_embd)` (output-normed states) predicting its
    /// token of `targets`, through the tied vocabulary projection without a `rows × vocab` tensor on the graph
    /// ([`tied_nll`]). `for_training`: a backward pass will follow (its gradient is prepared in the forward).
    pub fn nll(
        &self,
        hidden: &Tensor,
        targets: &[u32],
        for_training: bool,
    ) -> Result<Tensor, TrainerError> {
        tied_nll(hidden, &self.embd, targets, for_training).map_err(model_err)
    }

    fn hidden_inner(
        &self,
        tokens: &Tensor,
        layout: &[Segment],
        positions: Vec<u32>,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let cfg = &self.cfg;
        let hd = cfg.head_dim();
        let longest = positions.iter().max().map_or(t, |p| *p as usize + 1);
        let (cos, sin) = rope_tables(cfg, longest, &self.device)?;
        let positions = Tensor::from_vec(positions, t, &self.device)?;
        let tables = RopeTables::new(
            &cos.index_select(&positions, 0)?,
            &sin.index_select(&positions, 0)?,
        )?;
        let scale = self.spec.alpha / self.spec.rank as f32;
        let dropout = if train { self.spec.dropout } else { 0.0 };
        let lin = |l: &Linear, x: &Tensor| linear(l, x, scale, dropout, self.next_dropout_seed());
        let mut x = self
            .embd
            .embedding(&tokens.flatten_all()?)?
            .reshape((b, t, cfg.n_embd))?;
        let heads = Heads {
            n_head: cfg.n_head,
            n_kv: cfg.n_head_kv,
            hd,
        };
        for blk in &self.blocks {
            let h = rms_norm(&x, &blk.attn_norm, cfg.rms_eps as f32)?;
            let (q, k, v) = (
                lin(&blk.proj[0], &h)?,
                lin(&blk.proj[1], &h)?,
                lin(&blk.proj[2], &h)?,
            );
            // Each packed sequence attends only to itself (and the prefix it continues).
            let y = attention(&q, &k, &v, &tables, layout, heads)?;
            x = (x + lin(&blk.proj[3], &y)?)?;
            let h = rms_norm(&x, &blk.ffn_norm, cfg.rms_eps as f32)?;
            let gated = silu_mul(&lin(&blk.proj[4], &h)?, &lin(&blk.proj[5], &h)?)?;
            x = (x + lin(&blk.proj[6], &gated)?)?;
        }
        rms_norm(&x, &self.out_norm, cfg.rms_eps as f32)
    }
}

/// `x·Wᵀ + scale·(drop(x)·Aᵀ)·Bᵀ` on `(batch, seq, n_in)` (only `x·Wᵀ` where the projection has no LoRA pair),
/// the dropout mask drawn from `seed`.
fn linear(
    l: &Linear,
    x: &Tensor,
    scale: f32,
    dropout: f32,
    seed: u64,
) -> candle_core::Result<Tensor> {
    match &l.lora {
        None => frozen(x, &l.w),
        Some(p) => lora(
            x,
            &l.w,
            p.a.as_tensor(),
            p.b.as_tensor(),
            scale,
            dropout,
            seed,
        ),
    }
}

/// SplitMix64 over `a` advanced `b + 1` steps: well-spread, distinct seeds from a seed and a small counter.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a.wrapping_add(b.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE5_E4B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A tensor of N(0, std²) values from a seeded generator (Box–Muller over uniform pairs).
fn gaussian(
    seed: u64,
    std: f64,
    shape: (usize, usize),
    device: &Device,
) -> Result<Tensor, TrainerError> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = shape.0 * shape.1;
    let mut v = Vec::with_capacity(n + 1);
    while v.len() < n {
        let u1: f64 = rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = rng.random_range(0.0..1.0);
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let th = std::f64::consts::TAU * u2;
        v.push((r * th.cos()) as f32);
        v.push((r * th.sin()) as f32);
    }
    v.truncate(n);
    Tensor::from_vec(v, shape, device).map_err(model_err)
}

/// `cos`, `sin` of shape `(seq, hd/2)`: angle `pos · base^(-2i/hd)`.
fn rope_tables(
    cfg: &LlamaConfig,
    t: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let hd = cfg.head_dim();
    let inv: Vec<f32> = (0..hd / 2)
        .map(|i| (1.0 / cfg.rope_base.powf(2.0 * i as f64 / hd as f64)) as f32)
        .collect();
    let inv = Tensor::from_vec(inv, (1, hd / 2), device)?;
    let pos = Tensor::arange(0u32, t as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((t, 1))?;
    let ang = pos.broadcast_mul(&inv)?;
    Ok((ang.cos()?, ang.sin()?))
}
