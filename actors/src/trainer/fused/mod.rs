//! The trainer's fused ops (issue 31): one forward kernel and a hand-written backward each, where candle would
//! otherwise compose small differentiable ops that each keep their result for the backward pass.
//!
//! Why: in a training pass every intermediate of a differentiable composition lives until the backward pass
//! reaches it. Attention's scores are the widest of them — `heads × n × n` per layer for a sequence of `n`
//! tokens — and the composed `softmax(scores / √d + mask)` kept six such tensors (the product, the scaled, the
//! masked, the max-shifted, the exponentials, the quotient); RMS norm kept four `n × d` ones. Each op here keeps
//! only its output (the graph holds its input and output anyway) and recomputes the cheap rest in its backward:
//!
//! - [`frozen`]: `x·Wᵀ` whose backward is only the input's gradient (`W` is frozen: no weight gradient);
//! - [`rms_norm`]: `x / √(mean(x²) + ε) · w`, `w` frozen; backward `r·(g∘w) − x·r³·mean((g∘w)∘x)`;
//! - [`causal_softmax`]: the softmax of `scale · s` over each row's keys up to its own position, zero after;
//!   backward `scale · y∘(g − Σ g∘y)` (masked positions have `y = 0`, so their gradient is zero);
//! - [`rope`]: adjacent-pair rotation by each position's angles; backward the rotation by the opposite angles;
//! - [`silu_mul`]: `silu(gate) ∘ up`; backward `dy∘up∘σ(1 + gate(1 − σ))` and `dy∘silu(gate)`, `σ` recomputed;
//! - [`lora`]: `x·Wᵀ + s·(drop(x)·Aᵀ)·Bᵀ`; backward the gradients of `x`, `A` and `B` (not `W`), with the thin
//!   `drop(x)·Aᵀ` recomputed and the dropout mask redrawn from the seed its forward drew it from.
//!
//! The loops are in the `batos-kernels` crate, compiled at opt-level 3 even in the dev profile. Checked
//! against the composed ops by `tests::the_fused_ops_match_the_composed_ones_forward_and_backward` and
//! `tests::rope_silu_and_lora_match_the_composed_ones_forward_and_backward` (forward and gradients on random
//! inputs, relative error under 1e-4), and on the shipped model against llama.cpp by `actors/tests/unsloth.rs`.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Device, Layout, Shape, Tensor};

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
        if dims.last() != Some(&n_in) {
            candle_core::bail!("frozen-linear: input {dims:?} does not end in {n_in}");
        }
        let data = data("frozen-linear", storage, layout)?;
        let rows = data.len() / n_in;
        let x = Tensor::from_slice(data, (rows, n_in), &Device::Cpu)?;
        let y = x.matmul(&self.0.t()?)?.flatten_all()?.to_vec1::<f32>()?;
        Ok((CpuStorage::F32(y), projected(layout, n_out)))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (n_out, _) = self.0.dims2()?;
        let rows = grad.elem_count() / n_out;
        let g = grad.contiguous()?.reshape((rows, n_out))?.matmul(&self.0)?;
        Ok(Some(g.reshape(arg.shape())?))
    }
}

/// A kernel's shape complaint as candle's error.
fn kernel<T>(r: Result<T, batos_kernels::ShapeError>) -> candle_core::Result<T> {
    r.map_err(|e| candle_core::Error::Msg(e.to_string()))
}

/// An op whose output has its one input's shape: its forward and backward as kernels on flat values. One
/// [`CustomOp1`] (`SameShape`) carries each into candle, so the ops differ only in their loops.
trait SameShapeOp: Send + Sync + 'static {
    /// The op's name in candle's errors.
    const NAME: &'static str;
    /// The output's values from the input's (`dims`: the input's shape).
    fn forward(&self, x: &[f32], dims: &[usize]) -> candle_core::Result<Vec<f32>>;
    /// The input's gradient from the input `x`, the output `y` and the output's gradient `g`.
    fn backward(&self, x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Vec<f32>>;
}

/// The one [`CustomOp1`] of every [`SameShapeOp`].
struct SameShape<K>(K);

impl<K: SameShapeOp> CustomOp1 for SameShape<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = data(K::NAME, storage, layout)?;
        let y = self.0.forward(x, layout.shape().dims())?;
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let dx = self.0.backward(arg, res, grad)?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// RMS norm over the last dimension with a frozen weight `w` (`(d,)`): `x / √(mean(x²) + eps) · w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    let w = values(w)?;
    x.contiguous()?.apply_op1(SameShape(RmsNorm { w, eps }))
}

/// The op behind [`rms_norm`]: the weight's values and ε.
struct RmsNorm {
    w: Vec<f32>,
    eps: f32,
}

impl SameShapeOp for RmsNorm {
    const NAME: &'static str = "fused-rms-norm";

    fn forward(&self, x: &[f32], _dims: &[usize]) -> candle_core::Result<Vec<f32>> {
        kernel(batos_kernels::rms_norm(x, &self.w, self.eps))
    }

    fn backward(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Vec<f32>> {
        let (x, g) = (values(x)?, values(g)?);
        kernel(batos_kernels::rms_norm_grad(&x, &self.w, self.eps, &g))
    }
}

/// Attention weights: the softmax of `scale · s` over the last dimension of `s` `(.., n, n)`, row `i` over
/// keys `0..=i` only (the causal mask), zero after.
pub fn causal_softmax(s: &Tensor, scale: f32) -> candle_core::Result<Tensor> {
    s.contiguous()?
        .apply_op1(SameShape(CausalSoftmax { scale }))
}

/// The op behind [`causal_softmax`].
struct CausalSoftmax {
    scale: f32,
}

impl SameShapeOp for CausalSoftmax {
    const NAME: &'static str = "fused-causal-softmax";

    fn forward(&self, s: &[f32], dims: &[usize]) -> candle_core::Result<Vec<f32>> {
        let n = match dims {
            [.., a, b] if a == b => *b,
            _ => candle_core::bail!("fused-causal-softmax: scores {dims:?} are not square"),
        };
        kernel(batos_kernels::causal_softmax(s, n, self.scale))
    }

    fn backward(&self, s: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Vec<f32>> {
        let n = s.dims().last().copied().unwrap_or(0);
        let (y, g) = (values(y)?, values(g)?);
        kernel(batos_kernels::causal_softmax_grad(&y, &g, n, self.scale))
    }
}

/// RoPE's cosine and sine tables for one pass, `(t, hd/2)` row-major: row `p` holds the angles of the position
/// the `p`-th row of every head sits at (packed sequences restart at 0). Shared by every layer's q and k.
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

/// RoPE on adjacent pairs (llama.cpp's `rope_i`, candle's `rope_i_slow`) of `x` `(b, heads, t, hd)`.
///
/// Why fused: the composition splits every head into its pairs' halves, multiplies each by both tables and
/// joins them again — seven tensors the size of `x` kept per call, twice a layer. This keeps its output;
/// its backward is the same rotation by the opposite angles.
pub fn rope(x: &Tensor, tables: &RopeTables) -> candle_core::Result<Tensor> {
    let (_, _, t, hd) = x.dims4()?;
    if t != tables.t || tables.cos.len() != t * (hd / 2) {
        candle_core::bail!("rope: tables of {} positions for {:?}", tables.t, x.dims());
    }
    x.contiguous()?.apply_op1(SameShape(Rope {
        tables: tables.clone(),
        hd,
    }))
}

/// The op behind [`rope`].
struct Rope {
    tables: RopeTables,
    hd: usize,
}

impl SameShapeOp for Rope {
    const NAME: &'static str = "fused-rope";

    fn forward(&self, x: &[f32], _dims: &[usize]) -> candle_core::Result<Vec<f32>> {
        let t = &self.tables;
        kernel(batos_kernels::rope(x, &t.cos, &t.sin, self.hd, false))
    }

    /// A rotation's inverse is its transpose: the gradient turns by the opposite angles.
    fn backward(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Vec<f32>> {
        let t = &self.tables;
        kernel(batos_kernels::rope(
            &values(g)?,
            &t.cos,
            &t.sin,
            self.hd,
            true,
        ))
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
        let (g, u, dy) = (values(gate)?, values(up)?, values(grad)?);
        let (dg, du) = kernel(batos_kernels::silu_mul_grad(&g, &u, &dy))?;
        Ok((
            Some(Tensor::from_vec(dg, gate.shape(), gate.device())?),
            Some(Tensor::from_vec(du, up.shape(), up.device())?),
        ))
    }
}

/// A frozen projection with its LoRA update: `x·Wᵀ + scale · (drop(x)·Aᵀ)·Bᵀ` on `x` `(.., n_in)`, `W`
/// `(n_out, n_in)` frozen, `A` `(r, n_in)` and `B` `(n_out, r)` trained; `drop` is inverted dropout at rate
/// `dropout` (0 = off).
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
    let seed = if dropout > 0.0 { rand::random() } else { 0 };
    lora_seeded(x, w, a, b, scale, dropout, seed)
}

/// [`lora`] with the dropout mask drawn from `seed` (tests compare it with a composition on the same mask).
fn lora_seeded(
    x: &Tensor,
    w: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scale: f32,
    dropout: f32,
    seed: u64,
) -> candle_core::Result<Tensor> {
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
    /// `drop(x)` of a contiguous `x`: `x` itself when dropout is off.
    fn dropped(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.dropout == 0.0 {
            return Ok(x.clone());
        }
        let xd = kernel(batos_kernels::dropout(&values(x)?, self.seed, self.dropout))?;
        Tensor::from_vec(xd, x.shape(), &Device::Cpu)
    }
}

impl CustomOp3 for Lora {
    fn name(&self) -> &'static str {
        "fused-lora"
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
        let (n_out, n_in) = self.w.dims2()?;
        let x = data("fused-lora", s1, l1)?;
        let rows = x.len() / n_in;
        let a = Tensor::from_slice(data("fused-lora", s2, l2)?, l2.shape(), &Device::Cpu)?;
        let b = Tensor::from_slice(data("fused-lora", s3, l3)?, l3.shape(), &Device::Cpu)?;
        let x = Tensor::from_slice(x, (rows, n_in), &Device::Cpu)?;
        let y = x.matmul(&self.w.t()?)?;
        let delta = self.dropped(&x)?.matmul(&a.t()?)?.matmul(&b.t()?)?;
        let y = (y + (delta * f64::from(self.scale))?)?;
        Ok((
            CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?),
            projected(l1, n_out),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n_out, _) = self.w.dims2()?;
        let rows = grad.elem_count() / n_out;
        let (a, b) = (a.detach(), b.detach());
        let gy = grad.detach().contiguous()?.reshape((rows, n_out))?;
        let xd = self.dropped(&x.detach().contiguous()?.reshape((rows, ()))?)?;
        let s = f64::from(self.scale);
        let u = xd.matmul(&a.t()?)?;
        let gb = (gy.t()?.matmul(&u)? * s)?;
        let gu = (gy.matmul(&b)? * s)?;
        let ga = gu.t()?.matmul(&xd)?;
        // The LoRA path's share of x's gradient passes the forward's mask again.
        let mut through = gu.matmul(&a)?;
        if self.dropout > 0.0 {
            let mut v = values(&through)?;
            kernel(batos_kernels::dropout_in_place(
                &mut v,
                self.seed,
                self.dropout,
            ))?;
            through = Tensor::from_vec(v, xd.shape(), &Device::Cpu)?;
        }
        let gx = (gy.matmul(&self.w)? + through)?;
        Ok((Some(gx.reshape(x.shape())?), Some(ga), Some(gb)))
    }
}

#[cfg(test)]
mod tests;
