//! f32 matrix products into caller-owned buffers, over views of row-major slices or their transposes: the
//! frozen and LoRA projections' forward and backward products without the copies in and out of tensors that a
//! product through candle costs inside a custom op (its input copied into a tensor, its output copied out).
//!
//! The products themselves are the `gemm` crate's, the kernel candle's own matmul runs: it picks its
//! micro-kernel from the CPU's features at run time (FMA/AVX2 here; never an instruction the CPU lacks) and
//! runs on the calling rayon pool. Measured on these shapes against MKL and OpenBLAS (BENCHMARKS.md, "Run
//! 2026-12-05 (third)"), it is within 10 % of both, packing included, so the weights are not pre-packed.
//!
//! This is the one place in the workspace with `unsafe`: `gemm::gemm` takes raw pointers and strides. The
//! views below make it sound — a [`Mat`] is built only over a slice of exactly `rows × cols` values with
//! row-major strides (or their swap, for a transpose), so every index the product reads,
//! `i·rs + j·cs` for `i < rows`, `j < cols`, lies in its slice; the destination is a `&mut` slice of exactly
//! the product's size, so it cannot alias the inputs.

use crate::ShapeError;

/// A read-only view of a `rows × cols` matrix in a slice: row-major, a block of columns of a wider row-major
/// matrix ([`Mat::strided`]), or the transpose of either.
///
/// Invariant: every index `i·rs + j·cs` with `i < rows`, `j < cols` is inside `data`.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// `data` read as `rows × cols`, row-major; refused unless it holds exactly that many values.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Result<Self, ShapeError> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(ShapeError(format!(
                "matmul: {} values are not a {rows} × {cols} matrix",
                data.len()
            )));
        }
        Ok(Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        })
    }

    /// `rows × cols` values starting at `data[offset]`, row `i` at `offset + i·stride` (a head's columns in a
    /// projection's output: `stride` is the output's width); refused unless the last value is inside `data`.
    pub fn strided(
        data: &'a [f32],
        offset: usize,
        rows: usize,
        cols: usize,
        stride: usize,
    ) -> Result<Self, ShapeError> {
        // The last value's end; rows may not overlap (a row is at most `stride` wide) unless there is one.
        let end = match (rows, cols) {
            (0, _) | (_, 0) => Some(offset),
            _ if cols > stride && rows > 1 => None,
            _ => (rows - 1)
                .checked_mul(stride)
                .and_then(|v| v.checked_add(offset))
                .and_then(|v| v.checked_add(cols)),
        };
        let Some(data) = end.and_then(|end| data.get(offset..end)) else {
            return Err(ShapeError(format!(
                "matmul: {rows} × {cols} from {offset} by rows of {stride} do not fit {} values",
                data.len()
            )));
        };
        Ok(Self {
            data,
            rows,
            cols,
            rs: stride,
            cs: 1,
        })
    }

    /// The transpose (no copy: the strides swap).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Rows of the matrix as viewed.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the matrix as viewed.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// `a · b · scale` as a new row-major `a.rows × b.cols` matrix.
pub fn matmul(a: Mat<'_>, b: Mat<'_>, scale: f32) -> Result<Vec<f32>, ShapeError> {
    let mut dst = vec![0f32; a.rows * b.cols];
    matmul_into(&mut dst, false, a, b, scale)?;
    Ok(dst)
}

/// `dst = a · b · scale`, or with `accumulate` `dst += a · b · scale`, where `dst` is row-major
/// `a.rows × b.cols`. Runs on the current rayon pool's threads.
pub fn matmul_into(
    dst: &mut [f32],
    accumulate: bool,
    a: Mat<'_>,
    b: Mat<'_>,
    scale: f32,
) -> Result<(), ShapeError> {
    product(dst, accumulate, a, b, scale, gemm::Parallelism::Rayon(0))
}

/// [`matmul_into`] on the calling thread alone: for callers that already run many small products in parallel
/// (attention, a product per head).
pub fn matmul_into_here(
    dst: &mut [f32],
    accumulate: bool,
    a: Mat<'_>,
    b: Mat<'_>,
    scale: f32,
) -> Result<(), ShapeError> {
    product(dst, accumulate, a, b, scale, gemm::Parallelism::None)
}

fn product(
    dst: &mut [f32],
    accumulate: bool,
    a: Mat<'_>,
    b: Mat<'_>,
    scale: f32,
    threads: gemm::Parallelism,
) -> Result<(), ShapeError> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        return Err(ShapeError(format!(
            "matmul: {m} × {k} times {} × {n}",
            b.rows
        )));
    }
    if m.checked_mul(n) != Some(dst.len()) {
        return Err(ShapeError(format!(
            "matmul: a destination of {} values for a {m} × {n} product",
            dst.len()
        )));
    }
    if dst.is_empty() {
        return Ok(());
    }
    let stride = |v: usize| {
        isize::try_from(v).map_err(|_| ShapeError(format!("matmul: stride {v} out of range")))
    };
    let (a_rs, a_cs, b_rs, b_cs, n_s) = (
        stride(a.rs)?,
        stride(a.cs)?,
        stride(b.rs)?,
        stride(b.cs)?,
        stride(n)?,
    );
    // SAFETY: every index gemm reads of `a` and `b` (`i·rs + j·cs` inside their shapes) is inside their slices
    // (the `Mat` invariant), `dst` holds exactly `m × n` written with row stride `n`, and `dst` is borrowed
    // mutably while `a` and `b` are shared borrows, so nothing aliases. With `accumulate` false gemm ignores
    // `dst`'s values.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n_s,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            scale,
            false,
            false,
            false,
            threads,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook triple loop over views.
    fn naive(a: Mat<'_>, b: Mat<'_>) -> Vec<f32> {
        let at = |m: &Mat<'_>, i: usize, j: usize| m.data[i * m.rs + j * m.cs];
        let mut out = vec![0f32; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                out[i * b.cols + j] = (0..a.cols).map(|p| at(&a, i, p) * at(&b, p, j)).sum();
            }
        }
        out
    }

    #[test]
    fn products_of_views_and_transposes_match_the_triple_loop_and_bad_shapes_are_refused() {
        let (m, k, n) = (37, 53, 29);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 104729) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let (xm, wm) = (Mat::new(&x, m, k).unwrap(), Mat::new(&w, n, k).unwrap());
        // x·Wᵀ (the projection) and its gradient's shape gᵀ·x through transposed views.
        let y = matmul(xm, wm.t(), 1.0).unwrap();
        let want = naive(xm, wm.t());
        assert!(y.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4));
        let g = matmul(Mat::new(&y, m, n).unwrap().t(), xm, 0.5).unwrap();
        let want_g = naive(Mat::new(&y, m, n).unwrap().t(), xm);
        assert!(g
            .iter()
            .zip(&want_g)
            .all(|(a, b)| (a - 0.5 * b).abs() < 1e-3));
        // Accumulating adds to what is there.
        let mut acc = vec![1f32; m * n];
        matmul_into(&mut acc, true, xm, wm.t(), 2.0).unwrap();
        assert!(acc
            .iter()
            .zip(&want)
            .all(|(a, b)| (a - 1.0 - 2.0 * b).abs() < 1e-3));
        // An empty inner dimension is a zero product; empty outputs are nothing to do.
        assert_eq!(
            matmul(
                Mat::new(&[], 2, 0).unwrap(),
                Mat::new(&[], 0, 3).unwrap(),
                1.0
            )
            .unwrap(),
            vec![0.0; 6]
        );
        assert!(matmul(Mat::new(&[], 0, k).unwrap(), wm.t(), 1.0)
            .unwrap()
            .is_empty());
        // Refused: a slice that is not the shape named, mismatched inner sizes, a destination of another size.
        assert!(Mat::new(&x[1..], m, k).is_err());
        assert!(Mat::new(&x, usize::MAX, 2).is_err());
        assert!(matmul(xm, wm, 1.0).is_err());
        assert!(matmul_into(&mut vec![0.0; m * n - 1], false, xm, wm.t(), 1.0).is_err());
        // A block of columns of a wider matrix (a head of a projection's output), here and transposed.
        let head = Mat::strided(&x, 10, m, 8, k).unwrap();
        let block: Vec<f32> = (0..m)
            .flat_map(|i| x[10 + i * k..18 + i * k].to_vec())
            .collect();
        let (bm, want) = (
            Mat::new(&block, m, 8).unwrap(),
            naive(Mat::new(&block, m, 8).unwrap().t(), xm),
        );
        let mut got = vec![0f32; 8 * k];
        matmul_into_here(&mut got, false, head.t(), xm, 1.0).unwrap();
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4));
        assert_eq!(matmul(bm.t(), xm, 1.0).unwrap(), got);
        assert!(Mat::strided(&x, k - 7, m, 8, k).is_err());
        assert!(Mat::strided(&x, 0, m, k + 1, k).is_err());
        assert!(Mat::strided(&x, 0, usize::MAX, 1, 2).is_err());
    }
}
