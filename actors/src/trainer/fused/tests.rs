//! The fused ops against candle's composed ones: forward values and gradients on random inputs.

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

/// `y` and the gradients of `Σ y∘c` with respect to each of `args`, through `op`.
fn through_all(
    op: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
    args: &[(Vec<f32>, Vec<usize>)],
    c: &Tensor,
) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = args
        .iter()
        .map(|(v, s)| Var::from_vec(v.clone(), &s[..], &Device::Cpu).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = op(&ts).unwrap();
    let g = (&y * c).unwrap().sum_all().unwrap().backward().unwrap();
    let grads = ts.iter().map(|t| g.get(t).unwrap().clone()).collect();
    (y, grads)
}

#[test]
fn rope_silu_and_lora_match_the_composed_ones_forward_and_backward() {
    use candle_nn::rotary_emb::rope_i_slow;
    let dev = &Device::Cpu;

    // RoPE: (2 batches, 3 heads, 5 positions, head 8) against candle's composed `rope_i_slow`.
    let (t, hd) = (5usize, 8usize);
    let ang: Vec<f32> = (0..t * hd / 2)
        .map(|k| (k / (hd / 2)) as f32 * 0.7 / (1 + k % (hd / 2)) as f32)
        .collect();
    let ang = Tensor::from_vec(ang, (t, hd / 2), dev).unwrap();
    let (cos, sin) = (ang.cos().unwrap(), ang.sin().unwrap());
    let tables = RopeTables::new(&cos, &sin).unwrap();
    let shape = [2usize, 3, t, hd];
    let x = noise(240, 9);
    let c = Tensor::from_vec(noise(240, 10), &shape[..], dev).unwrap();
    let (yf, gf) = through(|x| rope(x, &tables), &x, &shape, &c);
    let (yc, gc) = through(|x| rope_i_slow(x, &cos, &sin), &x, &shape, &c);
    assert!(rel(&yf, &yc) < 1e-5, "rope forward {}", rel(&yf, &yc));
    assert!(rel(&gf, &gc) < 1e-5, "rope backward {}", rel(&gf, &gc));
    // Tables of another length are refused, not read past.
    let short =
        RopeTables::new(&cos.narrow(0, 0, 4).unwrap(), &sin.narrow(0, 0, 4).unwrap()).unwrap();
    assert!(rope(&yf, &short).is_err());

    // SiLU-gated product: both inputs' gradients against `silu(g) * u`.
    let args = [(noise(60, 11), vec![3, 20]), (noise(60, 12), vec![3, 20])];
    let c = Tensor::from_vec(noise(60, 13), (3, 20), dev).unwrap();
    let (yf, gf) = through_all(|v| silu_mul(&v[0], &v[1]), &args, &c);
    let (yc, gc) = through_all(|v| v[0].silu()? * &v[1], &args, &c);
    assert!(rel(&yf, &yc) < 1e-5, "silu forward {}", rel(&yf, &yc));
    for (f, c) in gf.iter().zip(&gc) {
        assert!(rel(f, c) < 1e-4, "silu backward {}", rel(f, c));
    }
    assert!(silu_mul(&yf, &yf.narrow(1, 0, 10).unwrap()).is_err());

    // LoRA, with and without dropout: the gradients of x, A and B against the composition on the same mask
    // (the fused op redraws it from its seed in the backward pass).
    let (rows, n_in, n_out, r) = (2 * 4, 12usize, 10usize, 3usize);
    let w = Tensor::from_vec(noise(n_out * n_in, 14), (n_out, n_in), dev).unwrap();
    let args = [
        (noise(rows * n_in, 15), vec![2, 4, n_in]),
        (noise(r * n_in, 16), vec![r, n_in]),
        (noise(n_out * r, 17), vec![n_out, r]),
    ];
    let c = Tensor::from_vec(noise(rows * n_out, 18), (2, 4, n_out), dev).unwrap();
    for p in [0.0f32, 0.3] {
        let seed = 77;
        let mask = batos_kernels::dropout(&vec![1.0; rows * n_in], seed, p).unwrap();
        let mask = Tensor::from_vec(mask, (2, 4, n_in), dev).unwrap();
        let fused = |v: &[Tensor]| lora_seeded(&v[0], &w, &v[1], &v[2], 0.5, p, seed);
        let composed = |v: &[Tensor]| {
            let y = v[0].broadcast_matmul(&w.t()?)?;
            let d = (&v[0] * &mask)?
                .broadcast_matmul(&v[1].t()?)?
                .broadcast_matmul(&v[2].t()?)?;
            y + (d * 0.5)?
        };
        let (yf, gf) = through_all(fused, &args, &c);
        let (yc, gc) = through_all(composed, &args, &c);
        assert!(
            rel(&yf, &yc) < 1e-5,
            "lora forward (p {p}) {}",
            rel(&yf, &yc)
        );
        for (k, (f, c)) in gf.iter().zip(&gc).enumerate() {
            assert!(
                rel(f, c) < 1e-4,
                "lora backward (p {p}), argument {k}: {}",
                rel(f, c)
            );
        }
    }
    assert!(lora(&yf, &w, &w, &w, 1.0, 0.0).is_err());
}
