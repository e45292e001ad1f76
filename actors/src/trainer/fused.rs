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
//!   backward `scale · y∘(g − Σ g∘y)` (masked positions have `y = 0`, so their gradient is zero).
//!
//! The loops are in the `batos-kernels` crate, compiled at opt-level 3 even in the dev profile. Checked
//! against the composed ops by `tests::the_fused_ops_match_the_composed_ones_forward_and_backward`
//! (forward and gradients on random inputs, relative error under 1e-4), and on the shipped model against
//! llama.cpp by `actors/tests/unsloth.rs`.

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor};

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
        let mut out = dims.to_vec();
        if let Some(last) = out.last_mut() {
            *last = n_out;
        }
        Ok((CpuStorage::F32(y), Shape::from(out)))
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
        let (x, g) = (values(arg)?, values(grad)?);
        let dx = kernel(batos_kernels::rms_norm_grad(&x, &self.w, self.eps, &g))?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// Attention weights: the softmax of `scale · s` over the last dimension of `s` `(.., n, n)`, row `i` over
/// keys `0..=i` only (the causal mask), zero after.
pub fn causal_softmax(s: &Tensor, scale: f32) -> candle_core::Result<Tensor> {
    s.contiguous()?.apply_op1(CausalSoftmax { scale })
}

/// The op behind [`causal_softmax`].
struct CausalSoftmax {
    scale: f32,
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "fused-causal-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims();
        let n = match dims {
            [.., a, b] if a == b => *b,
            _ => candle_core::bail!("fused-causal-softmax: scores {dims:?} are not square"),
        };
        let s = data("fused-causal-softmax", storage, layout)?;
        let y = kernel(batos_kernels::causal_softmax(s, n, self.scale))?;
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let n = arg.dims().last().copied().unwrap_or(0);
        let (y, g) = (values(res)?, values(grad)?);
        let dx = kernel(batos_kernels::causal_softmax_grad(&y, &g, n, self.scale))?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Tensor, Var, D};
    use candle_nn::ops::{rms_norm_slow, softmax};

    use super::*;

    /// Deterministic values in about [-2, 2].
    fn noise(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                let h = (i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503))
                    .wrapping_mul(2_246_822_519);
                (h >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
            })
            .collect()
    }

    fn rel(a: &Tensor, b: &Tensor) -> f32 {
        let (a, b) = (values(a).unwrap(), values(b).unwrap());
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let scale = b.iter().map(|v| v.abs()).fold(1e-6f32, f32::max);
        diff / scale
    }

    /// `y` and the gradient of `Σ y∘c` with respect to `x`, through `op`.
    fn through(
        op: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
        x: &[f32],
        shape: &[usize],
        c: &Tensor,
    ) -> (Tensor, Tensor) {
        let v = Var::from_vec(x.to_vec(), shape, &Device::Cpu).unwrap();
        let y = op(v.as_tensor()).unwrap();
        let loss = (&y * c).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        (y, g.get(v.as_tensor()).unwrap().clone())
    }

    #[test]
    fn the_fused_ops_match_the_composed_ones_forward_and_backward() {
        // RMS norm: (2, 5, 16) against candle's differentiable composition.
        let shape = [2usize, 5, 16];
        let x = noise(160, 1);
        let w = Tensor::from_vec(noise(16, 2), 16, &Device::Cpu).unwrap();
        let c = Tensor::from_vec(noise(160, 3), &shape[..], &Device::Cpu).unwrap();
        let (yf, gf) = through(|x| rms_norm(x, &w, 1e-5), &x, &shape, &c);
        let (yc, gc) = through(|x| rms_norm_slow(x, &w, 1e-5), &x, &shape, &c);
        assert!(rel(&yf, &yc) < 1e-5, "rms norm forward {}", rel(&yf, &yc));
        assert!(rel(&gf, &gc) < 1e-4, "rms norm backward {}", rel(&gf, &gc));

        // Causal softmax: scores (2 batches, 3 heads, 7, 7) against scale, mask and a generic softmax.
        let shape = [2usize, 3, 7, 7];
        let s = noise(294, 4);
        let c = Tensor::from_vec(noise(294, 5), &shape[..], &Device::Cpu).unwrap();
        let scale = 0.125f32;
        let m: Vec<f32> = (0..7)
            .flat_map(|i| (0..7).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(m, (7, 7), &Device::Cpu).unwrap();
        let composed = |s: &Tensor| {
            let att = (s * f64::from(scale))?.broadcast_add(&mask)?;
            softmax(&att, D::Minus1)
        };
        let (yf, gf) = through(|s| causal_softmax(s, scale), &s, &shape, &c);
        let (yc, gc) = through(composed, &s, &shape, &c);
        assert!(rel(&yf, &yc) < 1e-5, "softmax forward {}", rel(&yf, &yc));
        assert!(rel(&gf, &gc) < 1e-4, "softmax backward {}", rel(&gf, &gc));
        // Each row sums to one over the keys it may see, and nothing after them.
        let y = values(&yf).unwrap();
        for (k, row) in y.chunks_exact(7).enumerate() {
            let i = k % 7;
            assert!((row[..=i].iter().sum::<f32>() - 1.0).abs() < 1e-5);
            assert!(row[i + 1..].iter().all(|v| *v == 0.0));
        }

        // The frozen projection: the input's gradient as a matmul's, and no weight gradient asked for.
        let shape = [3usize, 4, 8];
        let x = noise(96, 6);
        let w = Tensor::from_vec(noise(40, 7), (5, 8), &Device::Cpu).unwrap();
        let c = Tensor::from_vec(noise(60, 8), (3, 4, 5), &Device::Cpu).unwrap();
        let (yf, gf) = through(|x| frozen(x, &w), &x, &shape, &c);
        let (yc, gc) = through(|x| x.broadcast_matmul(&w.t()?), &x, &shape, &c);
        assert!(rel(&yf, &yc) < 1e-5 && rel(&gf, &gc) < 1e-5);
    }
}
