//! Causal self-attention of packed sequences as one op: RoPE on the queries and keys, each query head's
//! scores against its key/value head, the causal softmax and the weighted values, from the projections'
//! outputs `(b, t, heads·hd)` straight to the input of the output projection, with a hand-written backward.
//!
//! Why one op: composed, attention was the longest chain of a layer — each of q, k, v reshaped, transposed and
//! copied into `(b, heads, t, hd)`, q and k turned, k and v repeated for grouped heads, then per packed sequence
//! three `narrow`s, two products, the softmax and a `cat`, then a transpose back. Candle keeps every link for
//! the backward pass and pays each link's gradient twice more (a zero tensor and a sum), and a `narrow`'s
//! gradient is a zero-padded copy of the whole pass. Here the forward keeps only its output; the backward
//! recomputes the scores and weights of one (segment, head) at a time, which is cheap: a head's `n × n`
//! product is a few percent of a layer's work.
//!
//! Shared prefixes: a pass's rows are [`Segment`]s, and a segment may continue an earlier one of its row (its
//! context) — every row of it sees the whole context, then itself causally — so sequences that begin with the
//! same tokens (a persona's examples share its system message and tools preamble) compute that prefix once;
//! its gradients gather what every continuation sends back.

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

/// `len` consecutive rows of a pass attended to as one sequence. With `context: Some(j)` they continue
/// segment `j` of the same row (an earlier one, itself without a context): each of them sees all of `j`'s rows
/// first, and their positions follow `j`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Rows (tokens); at least 1.
    pub len: usize,
    /// The earlier segment this one continues, by index in the row's layout.
    pub context: Option<usize>,
}

impl Segment {
    /// `lengths` as independent sequences.
    pub fn independent(lengths: &[usize]) -> Vec<Segment> {
        lengths
            .iter()
            .map(|&len| Segment { len, context: None })
            .collect()
    }
}

/// The position of every row of `layout` (a segment's rows count on from its context's length); `None`
/// when the layout is not one [`attention`] accepts (a zero length, or a context that is not an earlier
/// segment without one).
pub fn positions(layout: &[Segment]) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for (i, s) in layout.iter().enumerate() {
        let from = match s.context {
            None => 0,
            Some(j) if j < i && layout[j].context.is_none() => layout[j].len,
            Some(_) => return None,
        };
        if s.len == 0 {
            return None;
        }
        out.extend((from..from + s.len).map(|p| p as u32));
    }
    Some(out)
}

/// Attention of `q` `(b, t, n_head·hd)` over `k` and `v` `(b, t, n_kv·hd)`, each of the `b` rows laid out
/// as `layout` (its lengths summing to `t`): each token sees its segment's context, then its own segment up
/// to itself, at the positions `tables` give it (RoPE on q and k, adjacent pairs). The result is
/// `(b, t, n_head·hd)`, heads side by side.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    tables: &RopeTables,
    layout: &[Segment],
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
        || layout.iter().map(|s| s.len).sum::<usize>() != t
        || positions(layout).is_none()
        || tables.t != t
        || tables.cos.len() != t * (hd / 2)
    {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?}, layout {layout:?}, {heads:?}, tables of {} positions do not fit",
            q.dims(),
            k.dims(),
            v.dims(),
            tables.t
        );
    }
    // Every segment of every batch row, by absolute rows over the b·t rows.
    let mut seqs = Vec::with_capacity(b * layout.len());
    for r in 0..b {
        let mut starts = Vec::with_capacity(layout.len());
        let mut at = r * t;
        for s in layout {
            starts.push(at);
            let context = s.context.map(|j| (starts[j], layout[j].len));
            seqs.push(Seq {
                start: at,
                n: s.len,
                context,
            });
            at += s.len;
        }
    }
    let op = Attention {
        tables: tables.clone(),
        seqs: seqs.into(),
        heads,
        scale: 1.0 / (hd as f32).sqrt(),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// One segment over the pass's `b·t` rows: its `n` rows from `start`, and its context's `(start, len)`.
#[derive(Debug, Clone, Copy)]
struct Seq {
    start: usize,
    n: usize,
    context: Option<(usize, usize)>,
}

impl Seq {
    /// The rows its queries see, in order: the context's, then its own.
    fn key_rows(&self) -> impl Iterator<Item = usize> {
        let (cs, cn) = self.context.unwrap_or((0, 0));
        (cs..cs + cn).chain(self.start..self.start + self.n)
    }

    /// How many rows its queries see.
    fn keys(&self) -> usize {
        self.context.map_or(0, |c| c.1) + self.n
    }
}

/// The op behind [`attention`].
struct Attention {
    tables: RopeTables,
    seqs: Arc<[Seq]>,
    heads: Heads,
    scale: f32,
}

/// One (segment, key/value head) of a backward pass: the gradients of its query heads' rows `(rep, n, hd)`,
/// and of the key and value rows it sees `(keys, hd)` each (the context's first).
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

    /// Head `h`'s own rows of segment `seq` in `x` `(rows, heads·hd)`.
    fn head<'a>(
        &self,
        x: &'a [f32],
        heads: usize,
        seq: Seq,
        h: usize,
    ) -> candle_core::Result<Mat<'a>> {
        let hd = self.heads.hd;
        kernel(Mat::strided(
            x,
            (seq.start * heads + h) * hd,
            seq.n,
            hd,
            heads * hd,
        ))
    }

    /// Head `h`'s rows that segment `seq`'s queries see (`seq.keys()` rows of `hd`, the context's first), copied
    /// together: a copy is `hd` values a row against the `hd` multiply-adds per query row of each product.
    fn seen(&self, x: &[f32], heads: usize, seq: Seq, h: usize) -> Vec<f32> {
        let hd = self.heads.hd;
        let mut out = Vec::with_capacity(seq.keys() * hd);
        for r in seq.key_rows() {
            let at = (r * heads + h) * hd;
            out.extend_from_slice(&x[at..at + hd]);
        }
        out
    }

    /// The causal softmax weights `(n, keys)` of a segment's query head `q` against the key rows it sees.
    fn weights(&self, q: Mat<'_>, k: Mat<'_>, seq: Seq) -> candle_core::Result<Vec<f32>> {
        let (n, keys) = (seq.n, seq.keys());
        let mut s = vec![0f32; n * keys];
        kernel(matmul_into_here(&mut s, false, q, k.t(), 1.0))?;
        kernel(batos_kernels::causal_softmax(&s, n, keys, self.scale))
    }

    /// Copies per-task blocks `(heads_in_task, n, hd)` of the segments' own rows into `out` `(rows, heads·hd)`,
    /// task `i` being segment `i / groups`, heads `(i mod groups)·per..` of it.
    fn scatter(&self, blocks: &[Vec<f32>], heads: usize, per: usize) -> Vec<f32> {
        let hd = self.heads.hd;
        let groups = heads / per;
        let mut out = vec![0f32; self.rows() * heads * hd];
        for (i, block) in blocks.iter().enumerate() {
            let (seq, g) = (self.seqs[i / groups], i % groups);
            for (j, head) in block.chunks_exact(seq.n * hd).enumerate() {
                for (r, row) in head.chunks_exact(hd).enumerate() {
                    let at = ((seq.start + r) * heads + g * per + j) * hd;
                    out[at..at + hd].copy_from_slice(row);
                }
            }
        }
        out
    }

    /// Sums per-task key-side blocks `(keys, hd)` (task `i`: segment `i / heads`, key/value head `i mod heads`)
    /// into `out` `(rows, heads·hd)`: a shared context's rows gather every continuation's share.
    fn scatter_keys(&self, blocks: &[Vec<f32>], heads: usize) -> Vec<f32> {
        let hd = self.heads.hd;
        let mut out = vec![0f32; self.rows() * heads * hd];
        for (i, block) in blocks.iter().enumerate() {
            let (seq, g) = (self.seqs[i / heads], i % heads);
            for (r, row) in seq.key_rows().zip(block.chunks_exact(hd)) {
                let at = (r * heads + g) * hd;
                for (o, v) in out[at..at + hd].iter_mut().zip(row) {
                    *o += v;
                }
            }
        }
        out
    }

    fn rows(&self) -> usize {
        self.seqs.iter().map(|s| s.n).sum()
    }

    /// The tasks of a pass: every (segment, key/value head).
    fn tasks(&self) -> Vec<(Seq, usize)> {
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
                let (n, keys) = (seq.n, seq.keys());
                let (kb, vb) = (self.seen(&k, n_kv, seq, g), self.seen(v, n_kv, seq, g));
                let (kh, vh) = (mat(&kb, keys, hd)?, mat(&vb, keys, hd)?);
                let mut out = vec![0f32; rep * n * hd];
                for (j, o) in out.chunks_exact_mut(n * hd).enumerate() {
                    let p = self.weights(self.head(&q, n_head, seq, g * rep + j)?, kh, seq)?;
                    kernel(matmul_into_here(o, false, mat(&p, n, keys)?, vh, 1.0))?;
                }
                Ok(out)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok((
            CpuStorage::F32(self.scatter(&blocks, n_head, rep)),
            l1.shape().clone(),
        ))
    }

    /// Per (segment, head), with `P` recomputed: `∂V += Pᵀ·∂O`, `∂P = ∂O·Vᵀ`, `∂S` from the softmax's
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
                let (n, keys) = (seq.n, seq.keys());
                let kb = self.seen(&k_turned, n_kv, seq, kv);
                let vb = self.seen(vv, n_kv, seq, kv);
                let (kh, vh) = (mat(&kb, keys, hd)?, mat(&vb, keys, hd)?);
                let (mut dq, mut dk, mut dv) = (
                    vec![0f32; rep * n * hd],
                    vec![0f32; keys * hd],
                    vec![0f32; keys * hd],
                );
                for (j, dqj) in dq.chunks_exact_mut(n * hd).enumerate() {
                    let h = kv * rep + j;
                    let (qh, go) = (
                        self.head(&q_turned, n_head, seq, h)?,
                        self.head(g, n_head, seq, h)?,
                    );
                    let p = self.weights(qh, kh, seq)?;
                    kernel(matmul_into_here(
                        &mut dv,
                        j > 0,
                        mat(&p, n, keys)?.t(),
                        go,
                        1.0,
                    ))?;
                    let mut dp = vec![0f32; n * keys];
                    kernel(matmul_into_here(&mut dp, false, go, vh.t(), 1.0))?;
                    let ds = kernel(batos_kernels::causal_softmax_grad(
                        &p, &dp, n, keys, self.scale,
                    ))?;
                    kernel(matmul_into_here(dqj, false, mat(&ds, n, keys)?, kh, 1.0))?;
                    kernel(matmul_into_here(
                        &mut dk,
                        j > 0,
                        mat(&ds, n, keys)?.t(),
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
        let dk = self.rope(&self.scatter_keys(&dks, n_kv), n_kv, true)?;
        let dv = self.scatter_keys(&dvs, n_kv);
        let cpu = &Device::Cpu;
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), cpu)?),
            Some(Tensor::from_vec(dk, k.shape(), cpu)?),
            Some(Tensor::from_vec(dv, v.shape(), cpu)?),
        ))
    }
}
