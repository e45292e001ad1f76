//! The trainer's fused kernels (issue 31), on plain row-major f32 slices: the loops behind the candle ops of
//! `batos_actors::trainer::fused` (RMS norm, causal softmax, RoPE, the SiLU-gated product, dropout), which keep
//! only their outputs for the backward pass and recompute the rest.
//!
//! They live in a crate of their own for one reason: the dev profile compiles the workspace at opt-level 0
//! (a short first build) and its hot dependencies at 3 (candle, gemm, llama.cpp). Loops like these lose an order
//! of magnitude at opt-level 0, so this crate is listed with them (`[profile.dev.package.batos-kernels]`).
//!
//! Sums are taken in f64 (rows are hundreds to thousands of values long); every function checks its slices'
//! lengths and answers `Err` with what was wrong rather than panic.

#![forbid(unsafe_code)]

/// Slices whose lengths do not fit the shape asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(pub String);

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShapeError {}

fn rows_of(what: &str, len: usize, width: usize) -> Result<usize, ShapeError> {
    if width == 0 || !len.is_multiple_of(width) {
        return Err(ShapeError(format!(
            "{what}: {len} values are not whole rows of {width}"
        )));
    }
    Ok(len / width)
}

fn same(what: &str, a: usize, b: usize) -> Result<(), ShapeError> {
    if a != b {
        return Err(ShapeError(format!("{what}: {a} values against {b}")));
    }
    Ok(())
}

/// `1 / √(mean(row²) + eps)`.
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ms = row
        .iter()
        .map(|v| f64::from(*v) * f64::from(*v))
        .sum::<f64>()
        / row.len() as f64;
    (1.0 / (ms + f64::from(eps)).sqrt()) as f32
}

/// RMS norm of every row of `x` (rows of `w.len()`), times `w`: `x / √(mean(x²) + eps) · w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Result<Vec<f32>, ShapeError> {
    rows_of("rms_norm", x.len(), w.len())?;
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks_exact(w.len()) {
        let r = inv_rms(row, eps);
        y.extend(row.iter().zip(w).map(|(x, w)| x * r * w));
    }
    Ok(y)
}

/// The gradient of [`rms_norm`] with respect to `x`, given the output's gradient `g`:
/// `r·(g∘w) − x·r³·mean((g∘w)∘x)` per row, with `r` recomputed.
pub fn rms_norm_grad(x: &[f32], w: &[f32], eps: f32, g: &[f32]) -> Result<Vec<f32>, ShapeError> {
    rows_of("rms_norm_grad", x.len(), w.len())?;
    same("rms_norm_grad", x.len(), g.len())?;
    let d = w.len();
    let mut dx = Vec::with_capacity(x.len());
    for (xr, gr) in x.chunks_exact(d).zip(g.chunks_exact(d)) {
        let r = inv_rms(xr, eps);
        let dot = xr
            .iter()
            .zip(gr)
            .zip(w)
            .map(|((x, g), w)| f64::from(g * w) * f64::from(*x))
            .sum::<f64>()
            / d as f64;
        let k = (dot * f64::from(r).powi(3)) as f32;
        dx.extend(
            xr.iter()
                .zip(gr)
                .zip(w)
                .map(|((x, g), w)| r * g * w - x * k),
        );
    }
    Ok(dx)
}

/// Causal softmax of square score matrices stacked row-major (`n × n` each): row `i` of a matrix is the
/// softmax of `scale · s` over its keys `0..=i`, zero after.
pub fn causal_softmax(s: &[f32], n: usize, scale: f32) -> Result<Vec<f32>, ShapeError> {
    rows_of("causal_softmax", s.len(), n * n)?;
    let mut y = vec![0f32; s.len()];
    for (k, (row, out)) in s.chunks_exact(n).zip(y.chunks_exact_mut(n)).enumerate() {
        let seen = k % n + 1;
        let max = row[..seen]
            .iter()
            .fold(f32::NEG_INFINITY, |m, v| m.max(v * scale));
        let mut sum = 0f64;
        for (o, v) in out[..seen].iter_mut().zip(&row[..seen]) {
            let e = (v * scale - max).exp();
            *o = e;
            sum += f64::from(e);
        }
        let inv = (1.0 / sum) as f32;
        for o in &mut out[..seen] {
            *o *= inv;
        }
    }
    Ok(y)
}

/// The gradient of [`causal_softmax`] with respect to the scores, from its output `y` and the output's
/// gradient `g`: `scale · y∘(g − Σ g∘y)` per row (masked positions have `y = 0`, so they get zero).
pub fn causal_softmax_grad(
    y: &[f32],
    g: &[f32],
    n: usize,
    scale: f32,
) -> Result<Vec<f32>, ShapeError> {
    rows_of("causal_softmax_grad", y.len(), n * n)?;
    same("causal_softmax_grad", y.len(), g.len())?;
    let mut dx = vec![0f32; y.len()];
    for (k, ((yr, gr), out)) in y
        .chunks_exact(n)
        .zip(g.chunks_exact(n))
        .zip(dx.chunks_exact_mut(n))
        .enumerate()
    {
        let seen = k % n + 1;
        let dot = yr[..seen]
            .iter()
            .zip(&gr[..seen])
            .map(|(y, g)| f64::from(y * g))
            .sum::<f64>() as f32;
        for ((o, y), g) in out[..seen].iter_mut().zip(&yr[..seen]).zip(&gr[..seen]) {
            *o = scale * y * (g - dot);
        }
    }
    Ok(dx)
}

/// RoPE on adjacent pairs (llama.cpp's `rope_i`) of rows of `hd` values laid `(.., t, hd)`: row `r` is at
/// position `r mod t`, whose angles' cosines and sines are row `r mod t` of `cos` and `sin` (`t × hd/2`). Pair
/// `(a, b)` at angle θ becomes `(a cos θ − b sin θ, a sin θ + b cos θ)`. With `inverse` the angle is −θ: a
/// rotation's inverse is its transpose, so that is also RoPE's backward pass.
pub fn rope(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    hd: usize,
    inverse: bool,
) -> Result<Vec<f32>, ShapeError> {
    if hd == 0 || !hd.is_multiple_of(2) {
        return Err(ShapeError(format!(
            "rope: a head of {hd} values has no pairs"
        )));
    }
    same("rope (cos, sin)", cos.len(), sin.len())?;
    let t = rows_of("rope (tables)", cos.len(), hd / 2)?;
    rows_of("rope", x.len(), t * hd)?;
    let sign = if inverse { -1.0 } else { 1.0 };
    let mut y = vec![0f32; x.len()];
    for (r, (xr, yr)) in x.chunks_exact(hd).zip(y.chunks_exact_mut(hd)).enumerate() {
        let p = (r % t) * (hd / 2);
        let (c, s) = (&cos[p..p + hd / 2], &sin[p..p + hd / 2]);
        for (((xp, yp), c), s) in xr.chunks_exact(2).zip(yr.chunks_exact_mut(2)).zip(c).zip(s) {
            let s = sign * s;
            yp[0] = xp[0] * c - xp[1] * s;
            yp[1] = xp[0] * s + xp[1] * c;
        }
    }
    Ok(y)
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// The SiLU-gated product of a llama feed-forward: `silu(g) ∘ u`, `silu(g) = g · σ(g)`.
pub fn silu_mul(g: &[f32], u: &[f32]) -> Result<Vec<f32>, ShapeError> {
    same("silu_mul", g.len(), u.len())?;
    Ok(g.iter().zip(u).map(|(g, u)| g * sigmoid(*g) * u).collect())
}

/// The gradients of [`silu_mul`] with respect to `g` and `u`, given the output's gradient `dy`:
/// `dy ∘ u ∘ σ(g)(1 + g(1 − σ(g)))` and `dy ∘ silu(g)`.
pub fn silu_mul_grad(g: &[f32], u: &[f32], dy: &[f32]) -> Result<(Vec<f32>, Vec<f32>), ShapeError> {
    same("silu_mul_grad", g.len(), u.len())?;
    same("silu_mul_grad", g.len(), dy.len())?;
    let mut dg = Vec::with_capacity(g.len());
    let mut du = Vec::with_capacity(g.len());
    for ((g, u), dy) in g.iter().zip(u).zip(dy) {
        let s = sigmoid(*g);
        dg.push(dy * u * s * (1.0 + g * (1.0 - s)));
        du.push(dy * g * s);
    }
    Ok((dg, du))
}

/// Whether dropout keeps element `i` of the draw `seed` at rate `p`: a counter-based hash (SplitMix64's
/// finaliser), so the backward pass redraws exactly the forward's mask from the seed instead of keeping it.
fn kept(seed: u64, i: usize, threshold: u64) -> bool {
    let mut z = seed.wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE5_E4B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) >> 32 >= threshold
}

/// Inverted dropout: each value kept with probability `1 − p` and scaled by `1 / (1 − p)`, or zeroed; the
/// mask is a pure function of `seed` and the element's index. `p` must be in `[0, 1)`.
pub fn dropout(x: &[f32], seed: u64, p: f32) -> Result<Vec<f32>, ShapeError> {
    let mut y = x.to_vec();
    dropout_in_place(&mut y, seed, p)?;
    Ok(y)
}

/// [`dropout`] applied to `x` where it lies (the backward pass applies the same mask to a gradient).
pub fn dropout_in_place(x: &mut [f32], seed: u64, p: f32) -> Result<(), ShapeError> {
    if !(0.0..1.0).contains(&p) {
        return Err(ShapeError(format!("dropout: rate {p} is not in [0, 1)")));
    }
    if p == 0.0 {
        return Ok(());
    }
    let threshold = (f64::from(p) * (1u64 << 32) as f64) as u64;
    let k = 1.0 / (1.0 - p);
    for (i, v) in x.iter_mut().enumerate() {
        *v = if kept(seed, i, threshold) {
            *v * k
        } else {
            0.0
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_to_one_over_what_they_see_and_bad_shapes_are_refused() {
        let s: Vec<f32> = (0..18).map(|i| i as f32 * 0.3 - 2.0).collect();
        let y = causal_softmax(&s, 3, 0.5).unwrap();
        for (k, row) in y.chunks_exact(3).enumerate() {
            let i = k % 3;
            assert!((row[..=i].iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!(row[i + 1..].iter().all(|v| *v == 0.0));
        }
        assert!(causal_softmax(&s[..17], 3, 0.5).is_err());
        assert!(rms_norm(&s, &[1.0; 4], 1e-5).is_err());
        assert!(rms_norm_grad(&s, &[1.0; 3], 1e-5, &s[..9]).is_err());
        assert!(causal_softmax_grad(&y, &y[..9], 3, 0.5).is_err());
        // A row of one value normalises to its weight's sign.
        assert_eq!(rms_norm(&[-3.0], &[2.0], 0.0).unwrap(), vec![-2.0]);
    }

    #[test]
    fn rope_turns_pairs_by_their_position_and_its_inverse_turns_them_back() {
        // Two positions, a head of 4 (two pairs); position 0 does not turn, position 1 a quarter turn.
        let (cos, sin) = ([1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]);
        let x = [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0];
        let y = rope(&x, &cos, &sin, 4, false).unwrap();
        assert_eq!(y, vec![1.0, 2.0, 3.0, 4.0, -2.0, 1.0, 3.0, 4.0]);
        assert_eq!(rope(&y, &cos, &sin, 4, true).unwrap(), x.to_vec());
        assert!(rope(&x, &cos, &sin, 3, false).is_err());
        assert!(rope(&x[..6], &cos, &sin, 4, false).is_err());
        assert!(rope(&x, &cos, &sin[..3], 4, false).is_err());
    }

    #[test]
    fn silu_mul_and_its_gradient_agree_with_a_finite_difference() {
        let (g, u) = ([-1.5f32, 0.0, 0.7, 3.0], [2.0f32, -1.0, 0.5, 1.5]);
        let y = silu_mul(&g, &u).unwrap();
        assert_eq!(y[1], 0.0);
        let (dg, du) = silu_mul_grad(&g, &u, &[1.0; 4]).unwrap();
        let h = 1e-3f32;
        for i in 0..4 {
            let mut gp = g;
            gp[i] += h;
            let fd = (silu_mul(&gp, &u).unwrap()[i] - y[i]) / h;
            assert!((fd - dg[i]).abs() < 1e-2, "{i}: {fd} against {}", dg[i]);
            assert!((du[i] - y[i] / u[i]).abs() < 1e-6);
        }
        assert!(silu_mul(&g, &u[..3]).is_err());
        assert!(silu_mul_grad(&g, &u, &[1.0; 3]).is_err());
    }

    #[test]
    fn dropout_keeps_about_one_minus_p_scaled_and_redraws_the_same_mask_from_its_seed() {
        let x = vec![1.0f32; 100_000];
        let y = dropout(&x, 42, 0.25).unwrap();
        let kept = y.iter().filter(|v| **v != 0.0).count();
        assert!((kept as f64 / 1e5 - 0.75).abs() < 0.01, "{kept}");
        assert!(y
            .iter()
            .all(|v| *v == 0.0 || (*v - 1.0 / 0.75).abs() < 1e-6));
        // The mean is kept (inverted dropout), and the same seed gives the same mask, another seed another.
        assert!((y.iter().sum::<f32>() / 1e5 - 1.0).abs() < 0.02);
        assert_eq!(dropout(&x, 42, 0.25).unwrap(), y);
        assert_ne!(dropout(&x, 43, 0.25).unwrap(), y);
        assert_eq!(dropout(&x, 42, 0.0).unwrap(), x);
        assert!(dropout(&x, 42, 1.0).is_err() && dropout(&x, 42, -0.1).is_err());
    }
}
