//! Dot products over f32 vectors: the memory's summary tier scores every summary's unit vector against a
//! query with these (`batos_actors::memory::store::tier`), ~45× slower at opt-level 0 than here.

/// Floats summed side by side in [`dot`]: independent accumulators let the compiler use SIMD lanes (a single
/// running sum is a dependency chain it may not reorder).
pub const LANES: usize = 8;

/// Dot product of two slices over the shorter one's length: [`LANES`] running sums over whole chunks, added in
/// lane order, then the tail's products in order (so a given pair of slices always gives the same bits).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `dot(row, q)` for each row of `dim > 0` values in `rows` (row-major; a trailing partial row is ignored).
pub fn dots(rows: &[f32], dim: usize, q: &[f32]) -> Vec<f32> {
    rows.chunks_exact(dim.max(1)).map(|r| dot(r, q)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_sums_the_products_over_the_shorter_length_and_dots_scores_every_row() {
        let a: Vec<f32> = (1..=19).map(|i| i as f32).collect();
        let want: f32 = a.iter().map(|x| x * x).sum();
        assert!((dot(&a, &a) - want).abs() < 1e-3);
        assert_eq!(dot(&a[..3], &a), 1.0 + 4.0 + 9.0);
        assert_eq!(dot(&[], &a), 0.0);
        let rows = [1.0, 0.0, 0.0, 1.0, 2.0, 3.0, 9.0];
        assert_eq!(dots(&rows, 2, &[1.0, 2.0]), vec![1.0, 2.0, 8.0]);
    }
}
