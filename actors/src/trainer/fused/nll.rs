//! The loss as one op: each scored row's negative log-likelihood of its target token under the tied
//! vocabulary projection, `logsumexp(h·Eᵀ) − (h·Eᵀ)[target]`, with its gradient `(softmax − onehot)·E`.
//!
//! Why one op: composed, the loss was `h·Eᵀ` (a candle matmul), `log_softmax` and a `gather`. The vocabulary
//! is the widest dimension of a step (49,152 on SmolLM2 against a hidden width of 576), so each link kept a
//! `rows × vocab` tensor, and candle's backward of the matmul also computed the gradient of the frozen
//! embedding — a product as large as the forward one, into a fresh `vocab × d` zero tensor and a sum, every
//! pass, for a gradient nobody reads. Here the logits live one block of rows at a time; the forward of a
//! training pass also leaves each row's gradient (`rows × d`, small) for the backward, so the vocabulary
//! product runs twice a step, not three times; a pass without it (the gate's) does not pay for it.

use std::sync::{Arc, Mutex};

use batos_kernels::matmul::{matmul, matmul_into};
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{data, kernel, mat, Held};

/// Rows of logits computed at once: 128 rows of a 49,152-token vocabulary are 24 MiB.
const BLOCK_ROWS: usize = 128;

/// The NLL `(rows,)` of each row of `hidden` `(rows, d)` predicting `targets[row]`, the logits being
/// `hidden · embdᵀ` (`embd` `(vocab, d)`, frozen). With `for_training` the forward also prepares the gradient
/// its backward pass will use; without it a backward pass recomputes it (right, one product slower).
pub fn tied_nll(
    hidden: &Tensor,
    embd: &Tensor,
    targets: &[u32],
    for_training: bool,
) -> candle_core::Result<Tensor> {
    let (rows, d) = hidden.dims2()?;
    let (vocab, e_d) = embd.dims2()?;
    if d == 0 || vocab == 0 || e_d != d || targets.len() != rows {
        candle_core::bail!(
            "tied-nll: hidden {:?}, embedding {:?}, {} targets do not fit",
            hidden.dims(),
            embd.dims(),
            targets.len()
        );
    }
    if let Some(t) = targets.iter().find(|t| **t as usize >= vocab) {
        candle_core::bail!("tied-nll: target token {t} is outside the vocabulary of {vocab}");
    }
    hidden.contiguous()?.apply_op1(TiedNll {
        embd: embd.clone(),
        targets: targets.into(),
        for_training,
        grad: Mutex::new(None),
    })
}

/// The op behind [`tied_nll`]; `grad` holds `∂nll_r/∂h_r` from a training forward until its backward.
struct TiedNll {
    embd: Tensor,
    targets: Arc<[u32]>,
    for_training: bool,
    grad: Mutex<Option<Vec<f32>>>,
}

impl TiedNll {
    /// Each row's NLL and, with `want_grad`, `(softmax(h·Eᵀ) − onehot(target))·E` `(rows, d)`.
    fn run(&self, h: &[f32], want_grad: bool) -> candle_core::Result<(Vec<f32>, Option<Vec<f32>>)> {
        let op = "tied-nll";
        let (vocab, d) = self.embd.dims2()?;
        let held = Held::new(&self.embd);
        let e = mat(held.values(op)?, vocab, d)?;
        let rows = h.len() / d;
        let mut nll = Vec::with_capacity(rows);
        let mut grad = if want_grad {
            vec![0f32; rows * d]
        } else {
            Vec::new()
        };
        for start in (0..rows).step_by(BLOCK_ROWS) {
            let n = BLOCK_ROWS.min(rows - start);
            let hb = mat(&h[start * d..(start + n) * d], n, d)?;
            let mut logits = kernel(matmul(hb, e.t(), 1.0))?;
            let targets = &self.targets[start..start + n];
            let block = kernel(batos_kernels::logits_nll(
                &mut logits,
                vocab,
                targets,
                want_grad,
            ))?;
            nll.extend(block);
            if want_grad {
                let out = &mut grad[start * d..(start + n) * d];
                kernel(matmul_into(out, false, mat(&logits, n, vocab)?, e, 1.0))?;
            }
        }
        Ok((nll, want_grad.then_some(grad)))
    }
}

impl CustomOp1 for TiedNll {
    fn name(&self) -> &'static str {
        "tied-nll"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let h = data("tied-nll", storage, layout)?;
        let (nll, grad) = self.run(h, self.for_training)?;
        if let Ok(mut slot) = self.grad.lock() {
            *slot = grad;
        }
        let rows = nll.len();
        Ok((CpuStorage::F32(nll), Shape::from(rows)))
    }

    /// `∂h_r = g_r · (softmax − onehot)·E`, from the forward's rows when it kept them.
    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let kept = self.grad.lock().ok().and_then(|mut slot| slot.take());
        let per_row = match kept {
            Some(g) => g,
            None => {
                let arg = arg.contiguous()?;
                let held = Held::new(&arg);
                let (_, g) = self.run(held.values("tied-nll")?, true)?;
                g.unwrap_or_default()
            }
        };
        let upstream = super::values(grad)?;
        let d = self.embd.dims2()?.1;
        let mut dh = per_row;
        if dh.len() != upstream.len() * d {
            candle_core::bail!(
                "tied-nll: a gradient of {} rows for {} values",
                upstream.len(),
                dh.len()
            );
        }
        dh.par_chunks_mut(d)
            .zip(upstream.par_iter())
            .for_each(|(row, g)| row.iter_mut().for_each(|v| *v *= g));
        Ok(Some(Tensor::from_vec(dh, arg.shape(), &Device::Cpu)?))
    }
}
