//! Causal self-attention of packed sequences as one op: RoPE on the queries and keys, each query head's
//! scores against its key/value head, the causal softmax and the weighted values, from the projections'
//! outputs `(b, t, heads·hd)` straight to the input of the output projection, with a hand-written backward.
//!
//! Why one op: composed, attention was the longest chain of a layer — each of q, k, v reshaped, transposed and
//! copied into `(b, heads, t, hd)`, q and k turned, k and v repeated for grouped heads, then per packed sequence
//! three `narrow`s, two products, the softmax and a `cat`, then a transpose back. Candle keeps every link for
//! the backward pass and pays each link's gradient twice more (a zero tensor and a sum), and a `narrow`'s
//! gradient is a zero-padded copy of the whole pass. Here the forward keeps only its output; the backward
//! recomputes the scores and weights of one (sequence, head) at a time, which is cheap: a head's `n × n`
//! product is a few percent of a layer's work.

use std::sync::Arc;

use batos_kernels::matmul::{matmul_into_here, Mat};
use candle_core::{CpuStorage, CustomOp3, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{data, kernel, mat, Held, RopeTables};

/// How a layer's heads are laid out: `n_head` query heads, `n_kv` key/value heads (each serving
/// `n_head / n_kv` query heads in a row, llama.cpp's grouping), `hd` values per head.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads; divides `n_head`.
    pub n_kv: usize,
    /// Values per head (even: RoPE turns pairs).
    pub hd: usize,
}

/// Attention of `q` `(b, t, n_head·hd)` over `k` and `v` `(b, t, n_kv·hd)`, the sequences of each of the `b`
/// rows packed as `lengths` (summing to `t`): each token sees its own sequence up to itself, at the positions
/// `tables` give it (RoPE on q and k, adjacent pairs). The result is `(b, t, n_head·hd)`, heads side by side.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    tables: &RopeTables,
    lengths: &[usize],
    heads: Heads,
) -> candle_core::Result<Tensor> {
    let Heads { n_head, n_kv, hd } = heads;
    let (b, t, width) = q.dims3()?;
    if n_kv == 0
        || hd == 0
        || !n_head.is_multiple_of(n_kv)
        || width != n_head * hd
        || k.dims() != [b, t, n_kv * hd]
        || v.dims() != k.dims()
        || lengths.iter().sum::<usize>() != t
        || lengths.contains(&0)
        || tables.t != t
        || tables.cos.len() != t * (hd / 2)
    {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?}, lengths {lengths:?}, {heads:?}, tables of {} positions do not fit",
            q.dims(),
            k.dims(),
            v.dims(),
            tables.t
        );
    }
    // Every sequence of every batch row, as (first row, length) over the b·t rows.
    let seqs: Vec<(usize, usize)> = (0..b)
        .flat_map(|r| {
            lengths.iter().scan(r * t, |start, &n| {
                let s = *start;
                *start += n;
                Some((s, n))
            })
        })
        .collect();
    let op = Attention {
        tables: tables.clone(),
        seqs: seqs.into(),
        heads,
        scale: 1.0 / (hd as f32).sqrt(),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// The op behind [`attention`].
struct Attention {
    tables: RopeTables,
    seqs: Arc<[(usize, usize)]>,
    heads: Heads,
    scale: f32,
}

/// One (sequence, key/value head) of a backward pass: the gradients of its query heads' rows `(rep, n, hd)`,
/// and of its key and value rows `(n, hd)` each.
type Grads = (Vec<f32>, Vec<f32>, Vec<f32>);

impl Attention {
    /// `x` `(rows, heads·hd)` turned by its rows' positions (or back, `inverse`).
    fn rope(&self, x: &[f32], heads: usize, inverse: bool) -> candle_core::Result<Vec<f32>> {
        let t = &self.tables;
        kernel(batos_kernels::rope(
            x,
            &t.cos,
            &t.sin,
            self.heads.hd,
            heads,
            inverse,
        ))
    }

    /// Head `h`'s rows of sequence `(start, n)` in `x` `(rows, heads·hd)`.
    fn head<'a>(
        &self,
        x: &'a [f32],
        heads: usize,
        (start, n): (usize, usize),
        h: usize,
    ) -> candle_core::Result<Mat<'a>> {
        let hd = self.heads.hd;
        kernel(Mat::strided(x, (start * heads + h) * hd, n, hd, heads * hd))
    }

    /// The causal softmax weights `(n, n)` of query head `h` of a sequence against its key head.
    fn weights(&self, q: Mat<'_>, k: Mat<'_>, n: usize) -> candle_core::Result<Vec<f32>> {
        let mut s = vec![0f32; n * n];
        kernel(matmul_into_here(&mut s, false, q, k.t(), 1.0))?;
        kernel(batos_kernels::causal_softmax(&s, n, self.scale))
    }

    /// Copies per-task blocks `(heads_in_task, n, hd)` into `out` `(rows, heads·hd)`, task `i` being sequence
    /// `i / groups`, heads `(i mod groups)·per..` of it.
    fn scatter(&self, blocks: &[Vec<f32>], heads: usize, per: usize) -> Vec<f32> {
        let hd = self.heads.hd;
        let groups = heads / per;
        let rows = self.seqs.iter().map(|s| s.1).sum::<usize>();
        let mut out = vec![0f32; rows * heads * hd];
        for (i, block) in blocks.iter().enumerate() {
            let ((start, n), g) = (self.seqs[i / groups], i % groups);
            for (j, head) in block.chunks_exact(n * hd).enumerate() {
                for (r, row) in head.chunks_exact(hd).enumerate() {
                    let at = ((start + r) * heads + g * per + j) * hd;
                    out[at..at + hd].copy_from_slice(row);
                }
            }
        }
        out
    }

    /// The tasks of a pass: every (sequence, key/value head).
    fn tasks(&self) -> Vec<((usize, usize), usize)> {
        let n_kv = self.heads.n_kv;
        self.seqs
            .iter()
            .flat_map(|&s| (0..n_kv).map(move |g| (s, g)))
            .collect()
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let Heads { n_head, n_kv, hd } = self.heads;
        let rep = n_head / n_kv;
        let op = "fused-attention";
        let q = self.rope(data(op, s1, l1)?, n_head, false)?;
        let k = self.rope(data(op, s2, l2)?, n_kv, false)?;
        let v = data(op, s3, l3)?;
        let blocks = self
            .tasks()
            .into_par_iter()
            .map(|(seq, g)| {
                let n = seq.1;
                let (kh, vh) = (self.head(&k, n_kv, seq, g)?, self.head(v, n_kv, seq, g)?);
                let mut out = vec![0f32; rep * n * hd];
                for (j, o) in out.chunks_exact_mut(n * hd).enumerate() {
                    let p = self.weights(self.head(&q, n_head, seq, g * rep + j)?, kh, n)?;
                    kernel(matmul_into_here(o, false, mat(&p, n, n)?, vh, 1.0))?;
                }
                Ok(out)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok((
            CpuStorage::F32(self.scatter(&blocks, n_head, rep)),
            l1.shape().clone(),
        ))
    }

    /// Per (sequence, head), with `P` recomputed: `∂V += Pᵀ·∂O`, `∂P = ∂O·Vᵀ`, `∂S` from the softmax's
    /// gradient (scale included), `∂Q = ∂S·K`, `∂K += ∂Sᵀ·Q` (on the turned q and k); then `∂q` and `∂k` are
    /// turned back by the opposite angles.
    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Heads { n_head, n_kv, hd } = self.heads;
        let rep = n_head / n_kv;
        let op = "fused-attention";
        let grad = grad.contiguous()?;
        let [hq, hk, hv, hg] = [q, k, v, &grad].map(Held::new);
        let q_turned = self.rope(hq.values(op)?, n_head, false)?;
        let k_turned = self.rope(hk.values(op)?, n_kv, false)?;
        let (vv, g) = (hv.values(op)?, hg.values(op)?);
        let per_task = self
            .tasks()
            .into_par_iter()
            .map(|(seq, kv)| -> candle_core::Result<Grads> {
                let n = seq.1;
                let kh = self.head(&k_turned, n_kv, seq, kv)?;
                let vh = self.head(vv, n_kv, seq, kv)?;
                let (mut dq, mut dk, mut dv) = (
                    vec![0f32; rep * n * hd],
                    vec![0f32; n * hd],
                    vec![0f32; n * hd],
                );
                for (j, dqj) in dq.chunks_exact_mut(n * hd).enumerate() {
                    let h = kv * rep + j;
                    let (qh, go) = (
                        self.head(&q_turned, n_head, seq, h)?,
                        self.head(g, n_head, seq, h)?,
                    );
                    let p = self.weights(qh, kh, n)?;
                    kernel(matmul_into_here(
                        &mut dv,
                        j > 0,
                        mat(&p, n, n)?.t(),
                        go,
                        1.0,
                    ))?;
                    let mut dp = vec![0f32; n * n];
                    kernel(matmul_into_here(&mut dp, false, go, vh.t(), 1.0))?;
                    let ds = kernel(batos_kernels::causal_softmax_grad(&p, &dp, n, self.scale))?;
                    kernel(matmul_into_here(dqj, false, mat(&ds, n, n)?, kh, 1.0))?;
                    kernel(matmul_into_here(
                        &mut dk,
                        j > 0,
                        mat(&ds, n, n)?.t(),
                        qh,
                        1.0,
                    ))?;
                }
                Ok((dq, dk, dv))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut dqs = Vec::with_capacity(per_task.len());
        let (mut dks, mut dvs) = (Vec::with_capacity(per_task.len()), Vec::new());
        for (dq, dk, dv) in per_task {
            dqs.push(dq);
            dks.push(dk);
            dvs.push(dv);
        }
        let dq = self.rope(&self.scatter(&dqs, n_head, rep), n_head, true)?;
        let dk = self.rope(&self.scatter(&dks, n_kv, 1), n_kv, true)?;
        let dv = self.scatter(&dvs, n_kv, 1);
        let cpu = &Device::Cpu;
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), cpu)?),
            Some(Tensor::from_vec(dk, k.shape(), cpu)?),
            Some(Tensor::from_vec(dv, v.shape(), cpu)?),
        ))
    }
}
