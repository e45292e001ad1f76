//! The trainer's fused kernels (issue 31), on plain row-major f32 slices: the loops behind the candle ops of
//! `batos_actors::trainer::fused` (RMS norm, causal softmax, RoPE, the SiLU-gated product, dropout), which keep
//! only their outputs for the backward pass and recompute the rest, and the projections' matrix products
//! ([`matmul`]); the Curator's near-duplicate loops ([`minhash`]) and the memory's dot products ([`vector`]).
//!
//! They live in a crate of their own for one reason: the dev profile compiles the workspace at opt-level 0
//! (a short first build) and its hot dependencies at 3 (candle, gemm, llama.cpp). Loops like these lose an order
//! of magnitude at opt-level 0, so this crate is listed with them (`[profile.dev.package.batos-kernels]`).
//!
//! Every loop runs on the current rayon pool (the trainer's, the one its matrix products run on), in tasks of
//! whole rows of about [`TASK_VALUES`] values; a row is computed the same way whichever task takes it, so the
//! results do not depend on the number of threads. Sums are taken in f64 (rows are hundreds to thousands of
//! values long); every function checks its slices' lengths and answers `Err` with what was wrong rather than
//! panic.

// `unsafe` is allowed in one block only, the call into gemm in `matmul` (its comment says why it is sound).
#![deny(unsafe_code)]

pub mod matmul;
pub mod minhash;
pub mod vector;

use rayon::prelude::*;

/// Values per parallel task: a rayon task costs microseconds, so a kernel smaller than this stays on one
/// thread, and a large one is cut into tasks of about this many values (64 KiB of f32).
pub const TASK_VALUES: usize = 16 * 1024;

/// Whole rows of `width` values per task: about [`TASK_VALUES`] values, at least one row.
fn task_rows(width: usize) -> usize {
    (TASK_VALUES / width.max(1)).max(1)
}

/// A zeroed output of `len` values (whole rows of `width > 0`), filled by `f(r, row)` for every row `r` in
/// parallel tasks of whole rows; `f` reads its inputs' row `r` itself, so every row kernel shares this one split.
fn par_rows(len: usize, width: usize, f: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let tr = task_rows(width);
    let mut y = vec![0f32; len];
    y.par_chunks_mut(tr * width)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (j, row) in chunk.chunks_exact_mut(width).enumerate() {
                f(task * tr + j, row);
            }
        });
    y
}

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
    let d = w.len();
    let y = par_rows(x.len(), d, |r, out| {
        let xr = &x[r * d..(r + 1) * d];
        let k = inv_rms(xr, eps);
        for ((o, x), w) in out.iter_mut().zip(xr).zip(w) {
            *o = x * k * w;
        }
    });
    Ok(y)
}

/// The gradient of [`rms_norm`] with respect to `x`, given the output's gradient `g`:
/// `r·(g∘w) − x·r³·mean((g∘w)∘x)` per row, with `r` recomputed.
pub fn rms_norm_grad(x: &[f32], w: &[f32], eps: f32, g: &[f32]) -> Result<Vec<f32>, ShapeError> {
    rows_of("rms_norm_grad", x.len(), w.len())?;
    same("rms_norm_grad", x.len(), g.len())?;
    let d = w.len();
    let dx = par_rows(x.len(), d, |row, out| {
        let (xr, gr) = (&x[row * d..(row + 1) * d], &g[row * d..(row + 1) * d]);
        let r = inv_rms(xr, eps);
        let dot = xr
            .iter()
            .zip(gr)
            .zip(w)
            .map(|((x, g), w)| f64::from(g * w) * f64::from(*x))
            .sum::<f64>()
            / d as f64;
        let k = (dot * f64::from(r).powi(3)) as f32;
        for (((o, x), g), w) in out.iter_mut().zip(xr).zip(gr).zip(w) {
            *o = r * g * w - x * k;
        }
    });
    Ok(dx)
}

/// Causal softmax of score matrices stacked row-major, `rows × cols` each (`cols ≥ rows`): the queries are the
/// last `rows` of `cols` positions, so row `i` of a matrix is the softmax of `scale · s` over its keys
/// `0..=cols − rows + i` (a shared context of `cols − rows` keys every query sees, then causal), zero after.
/// Square matrices are the plain causal mask.
pub fn causal_softmax(
    s: &[f32],
    rows: usize,
    cols: usize,
    scale: f32,
) -> Result<Vec<f32>, ShapeError> {
    let offset = context("causal_softmax", s.len(), rows, cols)?;
    let y = par_rows(s.len(), cols, |k, out| {
        let (seen, row) = (offset + k % rows + 1, &s[k * cols..(k + 1) * cols]);
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
    });
    Ok(y)
}

/// Checks a stack of `rows × cols` score matrices; answers the shared context's width `cols − rows`.
fn context(what: &str, len: usize, rows: usize, cols: usize) -> Result<usize, ShapeError> {
    if rows == 0 || cols < rows {
        return Err(ShapeError(format!(
            "{what}: {rows} queries over {cols} keys (a query sees itself, so keys ≥ queries ≥ 1)"
        )));
    }
    rows_of(what, len, rows * cols)?;
    Ok(cols - rows)
}

/// The gradient of [`causal_softmax`] with respect to the scores, from its output `y` and the output's
/// gradient `g`: `scale · y∘(g − Σ g∘y)` per row (masked positions have `y = 0`, so they get zero).
pub fn causal_softmax_grad(
    y: &[f32],
    g: &[f32],
    rows: usize,
    cols: usize,
    scale: f32,
) -> Result<Vec<f32>, ShapeError> {
    let offset = context("causal_softmax_grad", y.len(), rows, cols)?;
    same("causal_softmax_grad", y.len(), g.len())?;
    let dx = par_rows(y.len(), cols, |k, out| {
        let (seen, at) = (offset + k % rows + 1, k * cols);
        let (yr, gr) = (&y[at..at + seen], &g[at..at + seen]);
        let dot = yr
            .iter()
            .zip(gr)
            .map(|(y, g)| f64::from(y * g))
            .sum::<f64>() as f32;
        for ((o, y), g) in out[..seen].iter_mut().zip(yr).zip(gr) {
            *o = scale * y * (g - dot);
        }
    });
    Ok(dx)
}

/// The negative log-likelihood of token `target` under one row of logits, `logsumexp(row) − row[target]`, in
/// f64; `None` when `target` is outside the row.
pub fn row_nll(row: &[f32], target: usize) -> Option<f64> {
    let t = f64::from(*row.get(target)?);
    let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let sum: f64 = row.iter().map(|v| f64::from((v - max).exp())).sum();
    Some(f64::from(max) + sum.ln() - t)
}

/// [`row_nll`] of every row of `logits` (`rows × vocab`, one target per row), as f32; with `grad` each row is
/// also replaced by the NLL's gradient with respect to it, `softmax(row) − onehot(target)` (the loss's backward
/// pass then needs no logits). In parallel, a row per task (a vocabulary's row is larger than a task).
pub fn logits_nll(
    logits: &mut [f32],
    vocab: usize,
    targets: &[u32],
    grad: bool,
) -> Result<Vec<f32>, ShapeError> {
    let rows = rows_of("logits_nll", logits.len(), vocab)?;
    same("logits_nll", rows, targets.len())?;
    if let Some(t) = targets.iter().find(|t| **t as usize >= vocab) {
        return Err(ShapeError(format!(
            "logits_nll: target {t} is outside a vocabulary of {vocab}"
        )));
    }
    Ok(logits
        .par_chunks_mut(vocab)
        .zip(targets.par_iter())
        .map(|(row, &t)| {
            let t = t as usize;
            let (max, target) = (row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)), row[t]);
            let mut sum = 0f64;
            for v in row.iter_mut() {
                *v = (*v - max).exp();
                sum += f64::from(*v);
            }
            if grad {
                let inv = (1.0 / sum) as f32;
                row.iter_mut().for_each(|v| *v *= inv);
                row[t] -= 1.0;
            }
            (f64::from(max) + sum.ln() - f64::from(target)) as f32
        })
        .collect())
}

/// RoPE on adjacent pairs (llama.cpp's `rope_i`) of rows of `hd` values, `group` consecutive rows to a
/// position: row `r` is at table row `(r / group) mod t`, whose angles' cosines and sines are that row of `cos`
/// and `sin` (`t × hd/2`). So `group = 1` turns `(.., t, hd)` (heads outermost) and `group = heads` turns
/// `(.., t, heads·hd)` (a projection's output, heads innermost). Pair `(a, b)` at angle θ becomes
/// `(a cos θ − b sin θ, a sin θ + b cos θ)`. With `inverse` the angle is −θ: a rotation's inverse is its
/// transpose, so that is also RoPE's backward pass.
pub fn rope(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    hd: usize,
    group: usize,
    inverse: bool,
) -> Result<Vec<f32>, ShapeError> {
    if hd == 0 || !hd.is_multiple_of(2) {
        return Err(ShapeError(format!(
            "rope: a head of {hd} values has no pairs"
        )));
    }
    same("rope (cos, sin)", cos.len(), sin.len())?;
    let t = rows_of("rope (tables)", cos.len(), hd / 2)?;
    rows_of("rope", x.len(), t * hd * group)?;
    let sign = if inverse { -1.0 } else { 1.0 };
    let y = par_rows(x.len(), hd, |r, out| {
        let p = (r / group % t) * (hd / 2);
        let (c, s) = (&cos[p..p + hd / 2], &sin[p..p + hd / 2]);
        let xr = &x[r * hd..(r + 1) * hd];
        for (((xp, yp), c), s) in xr
            .chunks_exact(2)
            .zip(out.chunks_exact_mut(2))
            .zip(c)
            .zip(s)
        {
            let s = sign * s;
            yp[0] = xp[0] * c - xp[1] * s;
            yp[1] = xp[0] * s + xp[1] * c;
        }
    });
    Ok(y)
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// The SiLU-gated product of a llama feed-forward: `silu(g) ∘ u`, `silu(g) = g · σ(g)`.
pub fn silu_mul(g: &[f32], u: &[f32]) -> Result<Vec<f32>, ShapeError> {
    same("silu_mul", g.len(), u.len())?;
    let mut y = vec![0f32; g.len()];
    y.par_chunks_mut(TASK_VALUES)
        .zip(g.par_chunks(TASK_VALUES).zip(u.par_chunks(TASK_VALUES)))
        .for_each(|(yc, (gc, uc))| {
            for ((o, g), u) in yc.iter_mut().zip(gc).zip(uc) {
                *o = g * sigmoid(*g) * u;
            }
        });
    Ok(y)
}

/// The gradients of [`silu_mul`] with respect to `g` and `u`, given the output's gradient `dy`:
/// `dy ∘ u ∘ σ(g)(1 + g(1 − σ(g)))` and `dy ∘ silu(g)`.
pub fn silu_mul_grad(g: &[f32], u: &[f32], dy: &[f32]) -> Result<(Vec<f32>, Vec<f32>), ShapeError> {
    same("silu_mul_grad", g.len(), u.len())?;
    same("silu_mul_grad", g.len(), dy.len())?;
    let (mut dg, mut du) = (vec![0f32; g.len()], vec![0f32; g.len()]);
    let ins = g
        .par_chunks(TASK_VALUES)
        .zip(u.par_chunks(TASK_VALUES))
        .zip(dy.par_chunks(TASK_VALUES));
    dg.par_chunks_mut(TASK_VALUES)
        .zip(du.par_chunks_mut(TASK_VALUES))
        .zip(ins)
        .for_each(|((dgc, duc), ((gc, uc), dyc))| {
            for ((((dg, du), g), u), dy) in dgc.iter_mut().zip(duc).zip(gc).zip(uc).zip(dyc) {
                let s = sigmoid(*g);
                *dg = dy * u * s * (1.0 + g * (1.0 - s));
                *du = dy * g * s;
            }
        });
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
    x.par_chunks_mut(TASK_VALUES)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (j, v) in chunk.iter_mut().enumerate() {
                *v = if kept(seed, task * TASK_VALUES + j, threshold) {
                    *v * k
                } else {
                    0.0
                };
            }
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_to_one_over_what_they_see_and_bad_shapes_are_refused() {
        let s: Vec<f32> = (0..18).map(|i| i as f32 * 0.3 - 2.0).collect();
        let y = causal_softmax(&s, 3, 3, 0.5).unwrap();
        for (k, row) in y.chunks_exact(3).enumerate() {
            let i = k % 3;
            assert!((row[..=i].iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!(row[i + 1..].iter().all(|v| *v == 0.0));
        }
        // Two queries after a context of four keys: query i sees the four and itself and those before it.
        let w = causal_softmax(&s[..12], 2, 6, 0.5).unwrap();
        for (i, row) in w.chunks_exact(6).enumerate() {
            assert!((row[..5 + i].iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!(row[5 + i..].iter().all(|v| *v == 0.0));
            assert!(row[..5 + i].iter().all(|v| *v > 0.0));
        }
        assert!(causal_softmax(&s[..17], 3, 3, 0.5).is_err());
        assert!(causal_softmax(&s[..12], 6, 2, 0.5).is_err());
        assert!(causal_softmax(&s[..0], 0, 0, 0.5).is_err());
        assert!(rms_norm(&s, &[1.0; 4], 1e-5).is_err());
        assert!(rms_norm_grad(&s, &[1.0; 3], 1e-5, &s[..9]).is_err());
        assert!(causal_softmax_grad(&y, &y[..9], 3, 3, 0.5).is_err());
        // A row of one value normalises to its weight's sign.
        assert_eq!(rms_norm(&[-3.0], &[2.0], 0.0).unwrap(), vec![-2.0]);
    }

    #[test]
    fn a_rows_nll_is_its_log_sum_exp_less_the_targets_logit() {
        let row = [1.0f32, 2.0, 3.0, 1000.0];
        // Dominated by the large logit: its NLL is ~0, another's ~997 (no overflow).
        assert!(row_nll(&row, 3).unwrap().abs() < 1e-9);
        assert!((row_nll(&row, 2).unwrap() - 997.0).abs() < 1e-9);
        let even = [0.5f32; 4];
        assert!((row_nll(&even, 1).unwrap() - 4f64.ln()).abs() < 1e-9);
        assert_eq!(row_nll(&even, 4), None);
        // Rows at once: the same NLLs, and with the gradient each row becomes softmax − onehot (sums to 0).
        let mut rows: Vec<f32> = row.iter().chain(&even).copied().collect();
        let nll = logits_nll(&mut rows.clone(), 4, &[2, 1], false).unwrap();
        assert!(
            (f64::from(nll[0]) - 997.0).abs() < 1e-3
                && (f64::from(nll[1]) - 4f64.ln()).abs() < 1e-6
        );
        assert_eq!(logits_nll(&mut rows, 4, &[2, 1], true).unwrap(), nll);
        assert!((rows[3] - 1.0).abs() < 1e-6 && (rows[2] + 1.0).abs() < 1e-6);
        assert!((rows[5] + 0.75).abs() < 1e-6 && (rows[4] - 0.25).abs() < 1e-6);
        assert!(logits_nll(&mut rows, 4, &[2], true).is_err());
        assert!(logits_nll(&mut rows, 4, &[2, 4], true).is_err());
        assert!(logits_nll(&mut rows[..7], 4, &[2, 1], true).is_err());
    }

    #[test]
    fn rope_turns_pairs_by_their_position_and_its_inverse_turns_them_back() {
        // Two positions, a head of 4 (two pairs); position 0 does not turn, position 1 a quarter turn.
        let (cos, sin) = ([1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]);
        let x = [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0];
        let y = rope(&x, &cos, &sin, 4, 1, false).unwrap();
        assert_eq!(y, vec![1.0, 2.0, 3.0, 4.0, -2.0, 1.0, 3.0, 4.0]);
        assert_eq!(rope(&y, &cos, &sin, 4, 1, true).unwrap(), x.to_vec());
        // Two heads of 2 side by side at each position (group 2): both turn with their position (here a
        // quarter turn at 0 and none at 1).
        let z = rope(
            &[1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0],
            &cos[..2],
            &sin[..2],
            2,
            2,
            false,
        );
        assert_eq!(z.unwrap(), vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
        let z = rope(
            &[1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0],
            &cos[2..],
            &sin[2..],
            2,
            2,
            false,
        );
        assert_eq!(z.unwrap(), vec![-2.0, 1.0, -2.0, 1.0, 1.0, 2.0, 1.0, 2.0]);
        assert!(rope(&x, &cos, &sin, 3, 1, false).is_err());
        assert!(rope(&x[..6], &cos, &sin, 4, 1, false).is_err());
        assert!(rope(&x, &cos, &sin[..3], 4, 1, false).is_err());
        assert!(rope(&x, &cos, &sin, 4, 3, false).is_err());
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

    #[test]
    fn large_inputs_cut_into_parallel_tasks_give_what_each_row_gives_alone() {
        // Several tasks' worth of values in each kernel: every row (or element) must come out as it does on
        // its own, whichever task and offset it fell in.
        let val = |i: usize| ((i * 7919) % 211) as f32 / 70.0 - 1.5;
        let (d, rows) = (576, 3 * TASK_VALUES / 576 + 5);
        let x: Vec<f32> = (0..d * rows).map(val).collect();
        let w: Vec<f32> = (0..d).map(|i| val(i + 3)).collect();
        let y = rms_norm(&x, &w, 1e-5).unwrap();
        let gx = rms_norm_grad(&x, &w, 1e-5, &y).unwrap();
        for r in [0, rows / 2, rows - 1] {
            let row = &x[r * d..(r + 1) * d];
            assert_eq!(
                &y[r * d..(r + 1) * d],
                &rms_norm(row, &w, 1e-5).unwrap()[..]
            );
            let g = &y[r * d..(r + 1) * d];
            assert_eq!(
                &gx[r * d..(r + 1) * d],
                &rms_norm_grad(row, &w, 1e-5, g).unwrap()[..]
            );
        }
        // Causal softmax over 5 matrices of 90 × 130 (row k of the stack is row k mod 90 of its matrix).
        let (n, c) = (90, 130);
        let s: Vec<f32> = (0..5 * n * c).map(val).collect();
        let p = causal_softmax(&s, n, c, 0.3).unwrap();
        let gp = causal_softmax_grad(&p, &s, n, c, 0.3).unwrap();
        let m = 3 * n * c..4 * n * c;
        assert_eq!(
            &p[m.clone()],
            &causal_softmax(&s[m.clone()], n, c, 0.3).unwrap()[..]
        );
        let alone = causal_softmax_grad(&p[m.clone()], &s[m.clone()], n, c, 0.3).unwrap();
        assert_eq!(&gp[m], &alone[..]);
        // RoPE on 9 heads of 200 positions: each head as it turns alone.
        let (t, hd) = (200, 64);
        let cos: Vec<f32> = (0..t * hd / 2).map(|i| val(i).cos()).collect();
        let sin: Vec<f32> = (0..t * hd / 2).map(|i| val(i).sin()).collect();
        let q: Vec<f32> = (0..9 * t * hd).map(val).collect();
        let rq = rope(&q, &cos, &sin, hd, 1, false).unwrap();
        let h = 7 * t * hd..8 * t * hd;
        assert_eq!(
            &rq[h.clone()],
            &rope(&q[h], &cos, &sin, hd, 1, false).unwrap()[..]
        );
        // The same heads side by side (group 9): head 7 of every position turns as it does alone.
        let side: Vec<f32> = (0..t)
            .flat_map(|p| (0..9).flat_map(move |h| (0..hd).map(move |d| (h * t + p) * hd + d)))
            .map(|i| q[i])
            .collect();
        let rs = rope(&side, &cos, &sin, hd, 9, false).unwrap();
        assert!((0..t).all(|p| rs[(p * 9 + 7) * hd..(p * 9 + 8) * hd]
            == rq[(7 * t + p) * hd..(7 * t + p + 1) * hd]));
        // Element-wise kernels: a prefix alone, and dropout's mask by global index (the same seed on the prefix).
        let sm = silu_mul(&x, &y).unwrap();
        let (dg, du) = silu_mul_grad(&x, &y, &sm).unwrap();
        let k = TASK_VALUES + 17;
        assert_eq!(&sm[..k], &silu_mul(&x[..k], &y[..k]).unwrap()[..]);
        let (dg1, du1) = silu_mul_grad(&x[..k], &y[..k], &sm[..k]).unwrap();
        assert_eq!((&dg[..k], &du[..k]), (&dg1[..], &du1[..]));
        assert_eq!(
            &dropout(&x, 9, 0.1).unwrap()[..k],
            &dropout(&x[..k], 9, 0.1).unwrap()[..]
        );
    }
}
