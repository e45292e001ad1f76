//! The trainer's fused kernels (issue 31), on plain row-major f32 slices: the loops behind the candle ops of
//! `batos_actors::trainer::fused`, which keep only their outputs for the backward pass and recompute the rest.
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
}
