//! The trainer's fused ops (issue 31): one forward kernel and a hand-written backward each, where candle would
//! otherwise compose small differentiable ops that each keep their result for the backward pass.
//!
//! Why: in a training pass every intermediate of a differentiable composition lives until the backward pass
//! reaches it, and candle pays every link's gradient twice more (a zero tensor and a sum). Attention's scores
//! are the widest per layer — `heads × n × n` for a sequence of `n` tokens — and the loss's logits the widest of
//! a step (`rows × vocab`). Each op here keeps only its output (the graph holds its input and output anyway)
//! and recomputes the cheap rest in its backward:
//!
//! - [`frozen`]: `x·Wᵀ` whose backward is only the input's gradient (`W` is frozen: no weight gradient);
//! - [`rms_norm`]: `x / √(mean(x²) + ε) · w`, `w` frozen; backward `r·(g∘w) − x·r³·mean((g∘w)∘x)`;
//! - [`attention`] (attention.rs): RoPE on q and k, each query head against its key/value head (grouped
//!   heads), the causal softmax within each packed sequence and the weighted values, from the projections'
//!   `(b, t, heads·hd)` outputs to the output projection's input; backward per (sequence, head) with the
//!   weights recomputed;
//! - [`silu_mul`]: `silu(gate) ∘ up`; backward `dy∘up∘σ(1 + gate(1 − σ))` and `dy∘silu(gate)`, `σ` recomputed;
//! - [`lora`]: `x·Wᵀ + s·(drop(x)·Aᵀ)·Bᵀ`; backward the gradients of `x`, `A` and `B` (not `W`), with the thin
//!   `drop(x)·Aᵀ` recomputed and the dropout mask redrawn from the seed its forward drew it from;
//! - [`tied_nll`] (nll.rs): each scored row's NLL through the tied vocabulary projection, logits one block of
//!   rows at a time, no gradient for the embedding.
//!
//! The loops and the matrix products (`batos_kernels::matmul`, straight from and into the ops' buffers) are in
//! the `batos-kernels` crate, compiled at opt-level 3 even in the dev profile. Checked against candle's
//! compositions by `tests::the_fused_ops_match_the_composed_ones_forward_and_backward`,
//! `tests::silu_and_lora_match_the_composed_ones_forward_and_backward`,
//! `tests::attention_matches_the_composed_chain_forward_and_backward` and
//! `tests::the_tied_nll_matches_log_softmax_and_gather_forward_and_backward` (forward and gradients on random
//! inputs, relative error under 1e-5 forward and 1e-4 backward), and on the shipped model against llama.cpp by
//! `actors/tests/unsloth.rs`.

use std::sync::Arc;

mod attention;
mod nll;
pub use attention::{attention, positions, Heads, Segment};
pub use nll::tied_nll;

use batos_kernels::matmul::{matmul, matmul_into, Mat};
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Device, Layout, Shape, Storage, StorageRef, Tensor,
};

/// The contiguous f32 data of `storage` under `layout`, or an error naming `op`.
fn data<'a>(op: &str, storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} needs a contiguous input");
    };
    Ok(&storage.as_slice::<f32>()?[start..end])
}

/// A tensor's values, row-major.
fn values(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
}

/// A contiguous tensor's storage held for reading, so the products read its values where they lie (the
/// weights and gradients, without the copy [`values`] makes). Make the tensor contiguous first.
struct Held<'t>(StorageRef<'t>, &'t Layout);

impl<'t> Held<'t> {
    fn new(t: &'t Tensor) -> Self {
        let (storage, layout) = t.storage_and_layout();
        Self(storage, layout)
    }

    /// The values, row-major; an error naming `op` for a tensor off the CPU or not contiguous.
    fn values(&self, op: &str) -> candle_core::Result<&[f32]> {
        match &*self.0 {
            Storage::Cpu(cpu) => data(op, cpu, self.1),
            _ => candle_core::bail!("{op}: the trainer's ops run on the CPU only"),
        }
    }
}

/// A row-major `rows × cols` view for the products, or candle's error.
fn mat(v: &[f32], rows: usize, cols: usize) -> candle_core::Result<Mat<'_>> {
    kernel(Mat::new(v, rows, cols))
}

/// The shape of a projection's output: the input's, its last dimension `n_out` (the frozen and LoRA ops).
fn projected(input: &Layout, n_out: usize) -> Shape {
    let mut out = input.shape().dims().to_vec();
    if let Some(last) = out.last_mut() {
        *last = n_out;
    }
    Shape::from(out)
}

/// `x·Wᵀ` for a frozen `W` `(n_out, n_in)` on `x` `(.., n_in)`.
///
/// Why not `matmul`: candle's backward of a matmul computes the gradient of both sides, so every frozen
/// projection would cost a second matmul as large as the forward one, for a weight gradient nobody reads
/// (measured: backward 2.5–6× the forward). This op's backward is only the input's gradient, `grad·W`.
pub fn frozen(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Frozen(w.clone()))
}

/// The op behind [`frozen`]; holds `W` (a cheap handle to the shared weight).
struct Frozen(Tensor);

impl CustomOp1 for Frozen {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n_out, n_in) = self.0.dims2()?;
        let dims = layout.shape().dims();
        if n_in == 0 || dims.last() != Some(&n_in) {
            candle_core::bail!("frozen-linear: input {dims:?} does not end in {n_in}");
        }
        let x = data("frozen-linear", storage, layout)?;
        let rows = x.len() / n_in;
        let w = Held::new(&self.0);
        let w = mat(w.values("frozen-linear")?, n_out, n_in)?;
        let y = kernel(matmul(mat(x, rows, n_in)?, w.t(), 1.0))?;
        Ok((CpuStorage::F32(y), projected(layout, n_out)))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (n_out, n_in) = self.0.dims2()?;
        let rows = grad.elem_count() / n_out;
        let grad = grad.contiguous()?;
        let (g, w) = (Held::new(&grad), Held::new(&self.0));
        let (g, w) = (g.values("frozen-linear")?, w.values("frozen-linear")?);
        let gx = kernel(matmul(mat(g, rows, n_out)?, mat(w, n_out, n_in)?, 1.0))?;
        Ok(Some(Tensor::from_vec(gx, arg.shape(), &Device::Cpu)?))
    }
}

/// A kernel's shape complaint as candle's error.
fn kernel<T>(r: Result<T, batos_kernels::ShapeError>) -> candle_core::Result<T> {
    r.map_err(|e| candle_core::Error::Msg(e.to_string()))
}

/// RMS norm over the last dimension with a frozen weight `w` (`(d,)`): `x / √(mean(x²) + eps) · w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    let w = values(w)?;
    x.contiguous()?.apply_op1(RmsNorm { w, eps })
}

/// The op behind [`rms_norm`]: the weight's values and ε.
struct RmsNorm {
    w: Vec<f32>,
    eps: f32,
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = data("fused-rms-norm", storage, layout)?;
        let y = kernel(batos_kernels::rms_norm(x, &self.w, self.eps))?;
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (x, g) = (arg.contiguous()?, grad.contiguous()?);
        let (hx, hg) = (Held::new(&x), Held::new(&g));
        let (xv, gv) = (hx.values("fused-rms-norm")?, hg.values("fused-rms-norm")?);
        let dx = kernel(batos_kernels::rms_norm_grad(xv, &self.w, self.eps, gv))?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// RoPE's cosine and sine tables for one pass, `(t, hd/2)` row-major: row `p` holds the angles of token `p`'s
/// position in its sequence (packed sequences restart at 0). Shared by every layer's attention.
#[derive(Clone)]
pub struct RopeTables {
    cos: Arc<[f32]>,
    sin: Arc<[f32]>,
    t: usize,
}

impl RopeTables {
    /// Tables from `cos` and `sin` `(t, hd/2)`.
    pub fn new(cos: &Tensor, sin: &Tensor) -> candle_core::Result<Self> {
        let (t, _) = cos.dims2()?;
        if cos.dims() != sin.dims() {
            candle_core::bail!("rope: cos {:?} against sin {:?}", cos.dims(), sin.dims());
        }
        Ok(Self {
            cos: values(cos)?.into(),
            sin: values(sin)?.into(),
            t,
        })
    }
}

/// The SiLU-gated product of a llama feed-forward, `silu(gate) ∘ up`, on two tensors of one shape.
///
/// Why fused: composed, `silu` keeps its result beside its input and the product is a third tensor as wide as
/// the feed-forward (`n_ff`, 2.7× the hidden width); candle's backward of `silu` builds five more. This keeps
/// only the product and recomputes `σ(gate)` in its backward.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    if gate.dims() != up.dims() {
        candle_core::bail!(
            "silu_mul: gate {:?} against up {:?}",
            gate.dims(),
            up.dims()
        );
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, SiluMul)
}

/// The op behind [`silu_mul`].
struct SiluMul;

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "fused-silu-mul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, u) = (
            data("fused-silu-mul", s1, l1)?,
            data("fused-silu-mul", s2, l2)?,
        );
        let y = kernel(batos_kernels::silu_mul(g, u))?;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let op = "fused-silu-mul";
        let grad = grad.contiguous()?;
        let [hg, hu, hd] = [gate, up, &grad].map(Held::new);
        let (g, u, dy) = (hg.values(op)?, hu.values(op)?, hd.values(op)?);
        let (dg, du) = kernel(batos_kernels::silu_mul_grad(g, u, dy))?;
        Ok((
            Some(Tensor::from_vec(dg, gate.shape(), gate.device())?),
            Some(Tensor::from_vec(du, up.shape(), up.device())?),
        ))
    }
}

/// A frozen projection with its LoRA update: `x·Wᵀ + scale · (drop(x)·Aᵀ)·Bᵀ` on `x` `(.., n_in)`, `W`
/// `(n_out, n_in)` frozen, `A` `(r, n_in)` and `B` `(n_out, r)` trained; `drop` is inverted dropout at rate
/// `dropout` (0 = off), its mask a pure function of `seed` (the caller's: a resumed run redraws its masks).
///
/// Why fused: composed, the dropout (a uniform draw, a comparison, two products), the two thin products, the
/// scaling and the sum keep six tensors between them, four of them as wide as the input or the output, for every
/// adapted projection of every layer. This keeps its output; the backward recomputes `drop(x)·Aᵀ` (`r` columns)
/// and redraws the dropout mask from the seed the forward drew it from, and takes no gradient for `W`.
pub fn lora(
    x: &Tensor,
    w: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scale: f32,
    dropout: f32,
    seed: u64,
) -> candle_core::Result<Tensor> {
    let (n_out, n_in) = w.dims2()?;
    let (r, a_in) = a.dims2()?;
    if n_in == 0
        || n_out == 0
        || a_in != n_in
        || b.dims() != [n_out, r]
        || x.dims().last() != Some(&n_in)
    {
        candle_core::bail!(
            "lora: x {:?}, W {:?}, A {:?}, B {:?} do not fit",
            x.dims(),
            w.dims(),
            a.dims(),
            b.dims()
        );
    }
    x.contiguous()?.apply_op3(
        &a.contiguous()?,
        &b.contiguous()?,
        Lora {
            w: w.clone(),
            scale,
            dropout,
            seed,
        },
    )
}

/// The op behind [`lora`]: the frozen weight, the update's scale, the dropout rate and the seed of this call's
/// mask.
struct Lora {
    w: Tensor,
    scale: f32,
    dropout: f32,
    seed: u64,
}

impl Lora {
    /// `drop(x)`: `None` when dropout is off (the caller reads `x` itself).
    fn dropped(&self, x: &[f32]) -> candle_core::Result<Option<Vec<f32>>> {
        if self.dropout == 0.0 {
            return Ok(None);
        }
        kernel(batos_kernels::dropout(x, self.seed, self.dropout)).map(Some)
    }
}

impl CustomOp3 for Lora {
    fn name(&self) -> &'static str {
        "fused-lora"
    }

    /// `y = x·Wᵀ`, then `u = drop(x)·Aᵀ` (`rows × r`), then `y += s·u·Bᵀ` in place: the output is the only
    /// buffer as wide as the projection.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n_out, n_in) = self.w.dims2()?;
        let x = data("fused-lora", s1, l1)?;
        let (a, b) = (data("fused-lora", s2, l2)?, data("fused-lora", s3, l3)?);
        let r = a.len() / n_in;
        let rows = x.len() / n_in;
        let w = Held::new(&self.w);
        let w = mat(w.values("fused-lora")?, n_out, n_in)?;
        let mut y = kernel(matmul(mat(x, rows, n_in)?, w.t(), 1.0))?;
        let xd = self.dropped(x)?;
        let xd = mat(xd.as_deref().unwrap_or(x), rows, n_in)?;
        let u = kernel(matmul(xd, mat(a, r, n_in)?.t(), 1.0))?;
        kernel(matmul_into(
            &mut y,
            true,
            mat(&u, rows, r)?,
            mat(b, n_out, r)?.t(),
            self.scale,
        ))?;
        Ok((CpuStorage::F32(y), projected(l1, n_out)))
    }

    /// With `u = drop(x)·Aᵀ` recomputed: `∂B = s·gᵀ·u`, `∂u = s·g·B`, `∂A = ∂uᵀ·drop(x)`, and
    /// `∂x = g·W + drop′(∂u·A)` (the LoRA path's share passes the forward's mask again).
    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n_out, n_in) = self.w.dims2()?;
        let r = a.dims2()?.0;
        let rows = grad.elem_count() / n_out;
        let op = "fused-lora";
        let (x, grad) = (x.contiguous()?, grad.contiguous()?);
        let [hx, hg, ha, hb, hw] = [&x, &grad, a, b, &self.w].map(Held::new);
        let (xv, g, av) = (hx.values(op)?, hg.values(op)?, ha.values(op)?);
        let (bv, w) = (hb.values(op)?, hw.values(op)?);
        let (g, am, bm) = (mat(g, rows, n_out)?, mat(av, r, n_in)?, mat(bv, n_out, r)?);
        let xd = self.dropped(xv)?;
        let xd = mat(xd.as_deref().unwrap_or(xv), rows, n_in)?;
        let u = kernel(matmul(xd, am.t(), 1.0))?;
        let gb = kernel(matmul(g.t(), mat(&u, rows, r)?, self.scale))?;
        let gu = kernel(matmul(g, bm, self.scale))?;
        let ga = kernel(matmul(mat(&gu, rows, r)?.t(), xd, 1.0))?;
        let mut gx = kernel(matmul(mat(&gu, rows, r)?, am, 1.0))?;
        if self.dropout > 0.0 {
            kernel(batos_kernels::dropout_in_place(
                &mut gx,
                self.seed,
                self.dropout,
            ))?;
        }
        kernel(matmul_into(&mut gx, true, g, mat(w, n_out, n_in)?, 1.0))?;
        let cpu = &Device::Cpu;
        Ok((
            Some(Tensor::from_vec(gx, x.shape(), cpu)?),
            Some(Tensor::from_vec(ga, a.shape(), cpu)?),
            Some(Tensor::from_vec(gb, b.shape(), cpu)?),
        ))
    }
}

#[cfg(test)]
mod tests;
