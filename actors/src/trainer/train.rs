//! The training loop: masked next-token loss, AdamW, a warm-up then cosine or constant learning rate,
//! checkpoints every few steps, progress after every step, and a cancel flag checked between steps.
//!
//! AdamW is written here rather than taken from `candle_nn::optim`: a resumed run must continue with the
//! moments it had, and candle's optimizer keeps them private.
//!
//! The data order is a pure function of the seed and the step (each epoch a seeded shuffle), so a run resumed
//! from a checkpoint at step `s` sees exactly the batches the killed run would have seen from `s` on.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{Tensor, Var};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::adapter::{checkpoint_bytes, read_checkpoint};
use super::fused::Segment;
use super::llama::{model_err, LlamaLora};
use super::TrainerError;

/// One training sequence: its tokens and which of them the loss is taken on (the assistant's answer, not
/// the prompt that precedes it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sequence {
    /// Token ids, as the serving engine tokenizes the rendered chat.
    pub tokens: Vec<u32>,
    /// `learn[i]`: token `i` is predicted and counted in the loss (token 0 never is: nothing precedes it).
    pub learn: Vec<bool>,
}

impl Sequence {
    /// Tokens counted in the loss.
    pub fn targets(&self) -> usize {
        self.learn.iter().skip(1).filter(|l| **l).count()
    }
}

/// How the learning rate moves after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Schedule {
    /// Cosine decay to zero at the last step.
    Cosine,
    /// The same rate throughout.
    Constant,
}

/// Hyper-parameters of one run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer steps in the run.
    pub steps: usize,
    /// Sequences per step (gradients summed over them, loss averaged over their target tokens).
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Steps of linear warm-up from zero.
    pub warmup_steps: usize,
    /// The decay after warm-up.
    pub schedule: Schedule,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of the data order.
    pub seed: u64,
    /// A checkpoint every this many steps (0 = only at the end or on cancel).
    pub checkpoint_every: usize,
    /// Most tokens in one forward pass: a step's sequences are packed into passes of at most this many tokens
    /// (one sequence longer than that gets a pass of its own). Larger passes run faster and hold more
    /// activations (~4 MiB per token on the 135M model with the shipped targets).
    pub pack_tokens: usize,
    /// Fewest leading tokens a pass's sequences must have in common for that prefix to be computed once and
    /// attended to by each of them ([`Pack`]); 0: never shared. A job from a home that predates the field
    /// (the cluster's wire) shares nothing.
    #[serde(default)]
    pub share_prefix: usize,
}

impl TrainConfig {
    /// The learning rate at step `s` (0-based).
    pub fn lr_at(&self, s: usize) -> f64 {
        if s < self.warmup_steps {
            return self.lr * (s + 1) as f64 / self.warmup_steps as f64;
        }
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Cosine => {
                let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let done = (s - self.warmup_steps) as f64 / span;
                0.5 * self.lr * (1.0 + (std::f64::consts::PI * done).cos())
            }
        }
    }
}

/// Steps a run makes: `steps`, or fewer when `max_epochs` passes over `examples` sequences, `batch` per step,
/// take fewer (`max_epochs` 0 or less: no bound); at least one step while there is an example.
pub fn bounded_steps(steps: usize, max_epochs: f64, examples: usize, batch: usize) -> usize {
    if max_epochs <= 0.0 || !max_epochs.is_finite() || examples == 0 {
        return steps;
    }
    let by_epochs = (max_epochs * examples as f64 / batch.max(1) as f64).ceil() as usize;
    steps.min(by_epochs.max(1))
}

/// What one step reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// Steps done (1-based after the first).
    pub step: usize,
    /// Steps in the run.
    pub steps: usize,
    /// Passes over the data begun (1-based).
    pub epoch: usize,
    /// Mean NLL per target token of this step's batch.
    pub loss: f64,
    /// Tokens (whole sequences, prompt included) processed per second, over this run so far.
    pub tokens_per_s: f64,
    /// Seconds left at the rate so far.
    pub eta_s: f64,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// Steps done in all (a resumed run counts the steps before the kill).
    pub steps: usize,
    /// The step it resumed from (0 when it started fresh).
    pub resumed_from: usize,
    /// Whether the cancel flag stopped it (a checkpoint was written first).
    pub cancelled: bool,
    /// Mean loss of the last step.
    pub last_loss: f64,
}

/// AdamW with moments that can be saved and restored.
pub struct AdamW {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    /// `(m, v)` per variable.
    moments: Vec<(Tensor, Tensor)>,
    /// Updates applied (for bias correction).
    t: usize,
}

impl AdamW {
    /// Fresh moments (zeros) for `vars`.
    pub fn new(vars: &[Var], weight_decay: f64) -> Result<Self, TrainerError> {
        let moments = vars
            .iter()
            .map(|v| Ok((v.zeros_like()?, v.zeros_like()?)))
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(model_err)?;
        Ok(Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            moments,
            t: 0,
        })
    }

    /// The moments, in `vars` order.
    pub fn moments(&self) -> &[(Tensor, Tensor)] {
        &self.moments
    }

    /// Restores moments saved after `t` updates.
    pub fn restore(
        &mut self,
        moments: Vec<(Tensor, Tensor)>,
        t: usize,
    ) -> Result<(), TrainerError> {
        if moments.len() != self.moments.len() {
            return Err(TrainerError::Model(format!(
                "{} moment pairs for {} variables",
                moments.len(),
                self.moments.len()
            )));
        }
        self.moments = moments;
        self.t = t;
        Ok(())
    }

    /// One update of every variable with its gradient.
    pub fn step(&mut self, vars: &[Var], grads: &[Tensor], lr: f64) -> Result<(), TrainerError> {
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        for ((var, g), (m, v)) in vars.iter().zip(grads).zip(self.moments.iter_mut()) {
            let run = || -> candle_core::Result<(Tensor, Tensor)> {
                let m2 = ((&*m * b1)? + (g * (1.0 - b1))?)?;
                let v2 = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                let update = ((&m2 / c1)? / ((&v2 / c2)?.sqrt()? + self.eps)?)?;
                let decayed = (var.as_tensor() * (1.0 - lr * self.weight_decay))?;
                var.set(&(decayed - (update * lr)?)?)?;
                Ok((m2, v2))
            };
            let (m2, v2) = run().map_err(model_err)?;
            *m = m2;
            *v = v2;
        }
        Ok(())
    }
}

/// Sequences run as one forward pass, and how many leading tokens they all begin with that the pass computes
/// once: a persona's examples share its system message (and its tools preamble, hundreds of tokens), which
/// would otherwise be most of every pass. The prefix's rows are what each sequence alone would compute there
/// (attention is causal), each sequence's own rows see all of it ([`Segment`]), and the prefix's gradient gathers
/// every sequence's share — the loss and gradients of the pass without sharing, at fewer rows.
#[derive(Debug, Clone)]
pub struct Pack<'a> {
    seqs: Vec<&'a Sequence>,
    shared: usize,
}

impl<'a> Pack<'a> {
    /// `seqs` with the longest prefix they share computed once when it is at least `min` tokens (`min` 0 or
    /// one sequence: nothing shared). Every sequence keeps at least one row of its own.
    pub fn new(seqs: Vec<&'a Sequence>, min: usize) -> Self {
        let shared = match seqs.split_first() {
            Some((first, rest)) if min > 0 && !rest.is_empty() => {
                let own = seqs.iter().map(|s| s.tokens.len().saturating_sub(2)).min();
                let common = rest.iter().fold(own.unwrap_or(0), |l, s| {
                    let same = first.tokens.iter().zip(&s.tokens);
                    l.min(same.take_while(|(a, b)| a == b).count())
                });
                if common >= min {
                    common
                } else {
                    0
                }
            }
            _ => 0,
        };
        Self { seqs, shared }
    }

    /// Leading tokens computed once for every sequence.
    pub fn shared(&self) -> usize {
        self.shared
    }

    /// Sequences in the pass.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    /// No sequence (a pass of nothing).
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Tokens the pass holds: the shared prefix once, then what each sequence has past it.
    fn tokens(&self) -> usize {
        self.shared
            + self
                .seqs
                .iter()
                .map(|s| s.tokens.len() - self.shared)
                .sum::<usize>()
    }
}

/// Sum of the NLL of `seq`'s target tokens (a scalar tensor, on the autograd graph) and their count.
pub fn sequence_nll(
    model: &LlamaLora,
    seq: &Sequence,
    train: bool,
) -> Result<(Tensor, usize), TrainerError> {
    packed_nll(model, &Pack::new(vec![seq], 0), train)
}

/// The same summed over a pack's sequences run as one pass ([`LlamaLora::hidden_segments`]).
pub fn packed_nll(
    model: &LlamaLora,
    pack: &Pack<'_>,
    train: bool,
) -> Result<(Tensor, usize), TrainerError> {
    let l = pack.shared;
    let mut input: Vec<u32> = match pack.seqs.first() {
        Some(first) if l > 0 => first.tokens[..l].to_vec(),
        _ => Vec::new(),
    };
    let mut layout = Vec::with_capacity(pack.seqs.len() + 1);
    if l > 0 {
        layout.push(Segment {
            len: l,
            context: None,
        });
    }
    let (mut rows, mut targets) = (Vec::new(), Vec::new());
    for seq in &pack.seqs {
        let n = seq.tokens.len();
        if n < 2 || seq.learn.len() != n || n - 1 <= l {
            return Err(TrainerError::Invalid(format!(
                "a sequence needs at least 2 tokens, a learn flag per token and one past the {l} shared ({n} \
                 tokens, {} flags)",
                seq.learn.len()
            )));
        }
        // Row i of the hidden states predicts token i + 1 (a shared row may predict a token for each sequence);
        // only the rows whose next token counts are projected.
        let base = input.len();
        for i in (0..n - 1).filter(|&i| seq.learn[i + 1]) {
            rows.push(if i < l { i } else { base + i - l } as u32);
            targets.push(seq.tokens[i + 1]);
        }
        input.extend_from_slice(&seq.tokens[l..n - 1]);
        layout.push(Segment {
            len: n - 1 - l,
            context: (l > 0).then_some(0),
        });
    }
    let dev = candle_core::Device::Cpu;
    if rows.is_empty() {
        let zero = Tensor::new(0f32, &dev).map_err(model_err)?;
        return Ok((zero, 0));
    }
    let count = rows.len();
    let t = input.len();
    let input = Tensor::from_vec(input, (1, t), &dev).map_err(model_err)?;
    let hidden = model.hidden_segments(&input, &layout, train)?;
    let idx = Tensor::from_vec(rows, count, &dev).map_err(model_err)?;
    let picked = hidden
        .squeeze(0)
        .and_then(|h| h.index_select(&idx, 0))
        .map_err(model_err)?;
    let nll = model.nll(&picked, &targets, train)?;
    Ok((nll.sum_all().map_err(model_err)?, count))
}

/// `batch`'s sequences (indices into `data`, those with a target) grouped into passes of at most `budget`
/// tokens, in order, a prefix of at least `share` tokens they all begin with counted (and computed) once.
pub(super) fn packs<'a>(
    data: &'a [Sequence],
    batch: &[usize],
    budget: usize,
    share: usize,
) -> Vec<Pack<'a>> {
    let mut out: Vec<Pack<'a>> = Vec::new();
    for seq in batch.iter().map(|&i| &data[i]).filter(|s| s.targets() > 0) {
        if let Some(p) = out.last_mut() {
            let mut seqs = p.seqs.clone();
            seqs.push(seq);
            let joined = Pack::new(seqs, share);
            if joined.tokens() <= budget {
                *p = joined;
                continue;
            }
        }
        out.push(Pack::new(vec![seq], share));
    }
    out
}

/// Mean NLL per target token over `data`, without dropout (the held-out measure in candle).
pub fn mean_nll(model: &LlamaLora, data: &[Sequence]) -> Result<f64, TrainerError> {
    let (mut sum, mut n) = (0.0, 0);
    for s in data {
        let (l, k) = sequence_nll(model, s, false)?;
        sum += l.detach().to_scalar::<f32>().map_err(model_err)? as f64;
        n += k;
    }
    Ok(if n == 0 { 0.0 } else { sum / n as f64 })
}

/// The data indices of step `s`: epochs are seeded shuffles of `0..len`, laid end to end.
pub fn batch_at(len: usize, batch: usize, seed: u64, s: usize) -> (usize, Vec<usize>) {
    let mut out = Vec::with_capacity(batch);
    let first = s * batch;
    let mut epoch = first / len.max(1);
    let mut order = epoch_order(len, seed, epoch);
    for k in first..first + batch {
        if k / len != epoch {
            epoch = k / len;
            order = epoch_order(len, seed, epoch);
        }
        out.push(order[k % len]);
    }
    (first / len.max(1) + 1, out)
}

fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    order.shuffle(&mut rng);
    order
}

/// Trains `model`'s LoRA pairs on `data` for `cfg.steps` steps. With `checkpoint`, resumes from that file when
/// it holds a checkpoint of the same `fingerprint`, writes it every `cfg.checkpoint_every` steps, at the end,
/// and on cancel. `on_progress` hears every step.
pub fn train(
    model: &LlamaLora,
    data: &[Sequence],
    cfg: &TrainConfig,
    checkpoint: Option<&Path>,
    fingerprint: &str,
    cancel: &AtomicBool,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Outcome, TrainerError> {
    if data.iter().all(|s| s.targets() == 0) {
        return Err(TrainerError::Invalid(
            "no sequence has a token to learn".into(),
        ));
    }
    let vars = model.vars();
    let mut opt = AdamW::new(&vars, cfg.weight_decay)?;
    let mut start = 0;
    if let Some(path) = checkpoint {
        if let Ok(bytes) = std::fs::read(path) {
            let ck = read_checkpoint(&bytes)?;
            if ck.fingerprint == fingerprint {
                model.set_lora(&ck.pairs)?;
                let mut moments = Vec::with_capacity(vars.len());
                for name in model.lora().keys() {
                    let [ma, mb, va, vb] = ck.moments.get(name).cloned().ok_or_else(|| {
                        TrainerError::Model(format!("the checkpoint has no moments for {name}"))
                    })?;
                    moments.push((ma, va));
                    moments.push((mb, vb));
                }
                opt.restore(moments, ck.step)?;
                start = ck.step;
                tracing::info!(
                    event = "trainer.resumed",
                    step = start,
                    "training resumed from its checkpoint"
                );
            } else {
                tracing::info!(
                    event = "trainer.checkpoint_ignored",
                    "a checkpoint of another run was found and not used"
                );
            }
        }
    }
    let save = |step: usize, opt: &AdamW| -> Result<(), TrainerError> {
        if let Some(path) = checkpoint {
            let bytes = checkpoint_bytes(model, step, fingerprint, opt.moments())?;
            crate::fsutil::atomic_write(path, &bytes)
                .map_err(|e| TrainerError::Io(format!("checkpoint {}: {e}", path.display())))?;
        }
        Ok(())
    };
    let began = Instant::now();
    let mut tokens_seen = 0usize;
    let mut last_loss = f64::NAN;
    for s in start..cfg.steps {
        if cancel.load(Ordering::SeqCst) {
            save(s, &opt)?;
            tracing::info!(
                event = "trainer.stopped",
                step = s,
                "training stopped on request; checkpoint written"
            );
            return Ok(Outcome {
                steps: s,
                resumed_from: start,
                cancelled: true,
                last_loss,
            });
        }
        let (epoch, batch) = batch_at(data.len(), cfg.batch.max(1), cfg.seed, s);
        let total: usize = batch.iter().map(|&i| data[i].targets()).sum();
        let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
        let mut loss_sum = 0.0;
        model.seed_dropout(cfg.seed, s);
        tokens_seen += batch.iter().map(|&i| data[i].tokens.len()).sum::<usize>();
        for pack in packs(data, &batch, cfg.pack_tokens, cfg.share_prefix) {
            let (nll, _) = packed_nll(model, &pack, true)?;
            loss_sum += nll.to_scalar::<f32>().map_err(model_err)? as f64;
            let scaled = (nll / total.max(1) as f64).map_err(model_err)?;
            let g = scaled.backward().map_err(model_err)?;
            for (acc, v) in grads.iter_mut().zip(&vars) {
                if let Some(gv) = g.get(v.as_tensor()) {
                    *acc = Some(match acc.take() {
                        Some(a) => (a + gv).map_err(model_err)?,
                        None => gv.clone(),
                    });
                }
            }
        }
        let grads = grads
            .into_iter()
            .zip(&vars)
            .map(|(g, v)| g.map_or_else(|| v.zeros_like(), Ok))
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(model_err)?;
        opt.step(&vars, &grads, cfg.lr_at(s))?;
        last_loss = loss_sum / total.max(1) as f64;
        let done = s + 1;
        let secs = began.elapsed().as_secs_f64().max(1e-9);
        let per_step = secs / (done - start) as f64;
        on_progress(&Progress {
            step: done,
            steps: cfg.steps,
            epoch,
            loss: last_loss,
            tokens_per_s: tokens_seen as f64 / secs,
            eta_s: per_step * (cfg.steps - done) as f64,
        });
        if cfg.checkpoint_every > 0 && done.is_multiple_of(cfg.checkpoint_every) && done < cfg.steps
        {
            save(done, &opt)?;
        }
    }
    save(cfg.steps, &opt)?;
    Ok(Outcome {
        steps: cfg.steps,
        resumed_from: start,
        cancelled: false,
        last_loss,
    })
}
