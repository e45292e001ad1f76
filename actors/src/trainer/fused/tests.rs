//! The fused ops against candle's composed ones: forward values and gradients on random inputs.

use candle_core::{Tensor, Var, D};
use candle_nn::ops::{rms_norm_slow, softmax};
use candle_nn::rotary_emb::rope_i_slow;

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
fn silu_and_lora_match_the_composed_ones_forward_and_backward() {
    let dev = &Device::Cpu;

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
        let fused = |v: &[Tensor]| lora(&v[0], &w, &v[1], &v[2], 0.5, p, seed);
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
    assert!(lora(&yf, &w, &w, &w, 1.0, 0.0, 0).is_err());
}

/// Attention as the trainer composed it before the fused op: heads split out and copied, q and k turned by
/// candle's `rope_i_slow`, k and v repeated for grouped heads, then per packed sequence the scaled, masked
/// softmax of q·kᵀ times v, the sequences joined and the heads put side by side again.
fn composed_attention(
    v: &[Tensor],
    cos: &Tensor,
    sin: &Tensor,
    lengths: &[usize],
    h: Heads,
) -> candle_core::Result<Tensor> {
    let (b, t, _) = v[0].dims3()?;
    let split = |y: &Tensor, n: usize| y.reshape((b, t, n, h.hd))?.transpose(1, 2)?.contiguous();
    let repeat = |y: Tensor| -> candle_core::Result<Tensor> {
        let rep = h.n_head / h.n_kv;
        y.unsqueeze(2)?
            .broadcast_as((b, h.n_kv, rep, t, h.hd))?
            .reshape((b, h.n_head, t, h.hd))
    };
    let q = rope_i_slow(&split(&v[0], h.n_head)?, cos, sin)?;
    let k = repeat(rope_i_slow(&split(&v[1], h.n_kv)?, cos, sin)?)?;
    let val = repeat(split(&v[2], h.n_kv)?)?;
    let mut parts = Vec::new();
    let mut start = 0;
    for &n in lengths {
        let m: Vec<f32> = (0..n)
            .flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(m, (n, n), &Device::Cpu)?;
        let (qs, ks, vs) = (
            q.narrow(2, start, n)?,
            k.narrow(2, start, n)?,
            val.narrow(2, start, n)?,
        );
        let s = (qs.matmul(&ks.t()?)? / (h.hd as f64).sqrt())?.broadcast_add(&mask)?;
        parts.push(softmax(&s, D::Minus1)?.matmul(&vs)?);
        start += n;
    }
    Tensor::cat(&parts, 2)?
        .transpose(1, 2)?
        .reshape((b, t, h.n_head * h.hd))
}

#[test]
fn attention_matches_the_composed_chain_forward_and_backward() {
    let dev = &Device::Cpu;
    let h = Heads {
        n_head: 4,
        n_kv: 2,
        hd: 8,
    };
    // Three packed sequences in one row, and two rows of one sequence each; positions restart per sequence.
    for (b, lengths) in [(1usize, vec![5usize, 3, 7]), (2, vec![6])] {
        let t: usize = lengths.iter().sum();
        let ang: Vec<f32> = lengths
            .iter()
            .flat_map(|&n| 0..n)
            .flat_map(|p| (0..h.hd / 2).map(move |i| p as f32 * 0.7 / (1 + i) as f32))
            .collect();
        let ang = Tensor::from_vec(ang, (t, h.hd / 2), dev).unwrap();
        let (cos, sin) = (ang.cos().unwrap(), ang.sin().unwrap());
        let tables = RopeTables::new(&cos, &sin).unwrap();
        let (wq, wkv) = (h.n_head * h.hd, h.n_kv * h.hd);
        let args = [
            (noise(b * t * wq, 21), vec![b, t, wq]),
            (noise(b * t * wkv, 22), vec![b, t, wkv]),
            (noise(b * t * wkv, 23), vec![b, t, wkv]),
        ];
        let c = Tensor::from_vec(noise(b * t * wq, 24), (b, t, wq), dev).unwrap();
        let layout = Segment::independent(&lengths);
        let fused = |v: &[Tensor]| attention(&v[0], &v[1], &v[2], &tables, &layout, h);
        let composed = |v: &[Tensor]| composed_attention(v, &cos, &sin, &lengths, h);
        let (yf, gf) = through_all(fused, &args, &c);
        let (yc, gc) = through_all(composed, &args, &c);
        assert!(rel(&yf, &yc) < 1e-5, "attention forward {}", rel(&yf, &yc));
        for (k, (f, c)) in gf.iter().zip(&gc).enumerate() {
            assert!(
                rel(f, c) < 1e-4,
                "attention backward ({b}, {lengths:?}), argument {k}: {}",
                rel(f, c)
            );
        }
    }
    // Refused, not read past: lengths that do not cover the row, tables of another length, heads that do not
    // divide.
    let ang = Tensor::from_vec(noise(5 * 4, 25), (5, 4), dev).unwrap();
    let tables = RopeTables::new(&ang.cos().unwrap(), &ang.sin().unwrap()).unwrap();
    let q = Tensor::from_vec(noise(5 * 32, 26), (1, 5, 32), dev).unwrap();
    let kv = Tensor::from_vec(noise(5 * 16, 27), (1, 5, 16), dev).unwrap();
    let at = |l: &[usize], tables: &RopeTables, h: Heads| {
        attention(&q, &kv, &kv, tables, &Segment::independent(l), h)
    };
    assert!(at(&[5], &tables, h).is_ok());
    assert!(at(&[2, 2], &tables, h).is_err());
    assert!(at(&[5, 0], &tables, h).is_err());
    let short =
        RopeTables::new(&ang.narrow(0, 0, 4).unwrap(), &ang.narrow(0, 0, 4).unwrap()).unwrap();
    assert!(at(&[5], &short, h).is_err());
    let odd = Heads { n_kv: 3, ..h };
    assert!(at(&[5], &tables, odd).is_err());
}

/// RoPE tables for rows at `positions` (angles as in the tests above).
fn tables_at(positions: &[u32], hd: usize) -> RopeTables {
    let ang: Vec<f32> = positions
        .iter()
        .flat_map(|&p| (0..hd / 2).map(move |i| p as f32 * 0.7 / (1 + i) as f32))
        .collect();
    let ang = Tensor::from_vec(ang, (positions.len(), hd / 2), &Device::Cpu).unwrap();
    RopeTables::new(&ang.cos().unwrap(), &ang.sin().unwrap()).unwrap()
}

#[test]
fn a_shared_prefix_gives_what_each_sequence_gives_whole_forward_and_backward() {
    let dev = &Device::Cpu;
    let h = Heads {
        n_head: 4,
        n_kv: 2,
        hd: 8,
    };
    // A prefix of 4 rows continued by branches of 3 and 5, against the two sequences whole (the prefix twice).
    let (p, b1, b2) = (4usize, 3usize, 5usize);
    let shared = [
        Segment {
            len: p,
            context: None,
        },
        Segment {
            len: b1,
            context: Some(0),
        },
        Segment {
            len: b2,
            context: Some(0),
        },
    ];
    let whole = Segment::independent(&[p + b1, p + b2]);
    assert_eq!(
        positions(&shared).unwrap(),
        [0, 1, 2, 3, 4, 5, 6, 4, 5, 6, 7, 8]
    );
    // Row i of the whole pass is row map[i] of the shared one.
    let map: Vec<usize> = (0..p + b1).chain(0..p).chain(p + b1..p + b1 + b2).collect();
    let (ts, tw) = (p + b1 + b2, map.len());
    let (wq, wkv) = (h.n_head * h.hd, h.n_kv * h.hd);
    let spread = |x: &[f32], w: usize| -> Vec<f32> {
        map.iter()
            .flat_map(|&r| x[r * w..(r + 1) * w].to_vec())
            .collect()
    };
    let (q, k, v, c) = (
        noise(ts * wq, 41),
        noise(ts * wkv, 42),
        noise(ts * wkv, 43),
        noise(ts * wq, 44),
    );
    // The whole pass's outputs weigh as the shared pass's: the prefix's second copy not at all.
    let mut cw = spread(&c, wq);
    cw[(p + b1) * wq..(2 * p + b1) * wq].fill(0.0);
    let ct = |c: Vec<f32>, t: usize| Tensor::from_vec(c, (1, t, wq), dev).unwrap();
    let (tables_s, tables_w) = (
        tables_at(&positions(&shared).unwrap(), h.hd),
        tables_at(&positions(&whole).unwrap(), h.hd),
    );
    let (ys, gs) = through_all(
        |a| attention(&a[0], &a[1], &a[2], &tables_s, &shared, h),
        &[
            (q.clone(), vec![1, ts, wq]),
            (k.clone(), vec![1, ts, wkv]),
            (v.clone(), vec![1, ts, wkv]),
        ],
        &ct(c, ts),
    );
    let (yw, gw) = through_all(
        |a| attention(&a[0], &a[1], &a[2], &tables_w, &whole, h),
        &[
            (spread(&q, wq), vec![1, tw, wq]),
            (spread(&k, wkv), vec![1, tw, wkv]),
            (spread(&v, wkv), vec![1, tw, wkv]),
        ],
        &ct(cw, tw),
    );
    // Forward: every row of the whole pass is its shared row.
    let ys_spread = Tensor::from_vec(spread(&values(&ys).unwrap(), wq), (1, tw, wq), dev).unwrap();
    assert!(
        rel(&ys_spread, &yw) < 1e-5,
        "forward {}",
        rel(&ys_spread, &yw)
    );
    // Backward: a shared row's gradient is the sum of its copies'.
    for ((s, w), width) in gs.iter().zip(&gw).zip([wq, wkv, wkv]) {
        let gw = values(w).unwrap();
        let mut folded = vec![0f32; ts * width];
        for (i, &r) in map.iter().enumerate() {
            for (o, g) in folded[r * width..(r + 1) * width]
                .iter_mut()
                .zip(&gw[i * width..(i + 1) * width])
            {
                *o += g;
            }
        }
        let folded = Tensor::from_vec(folded, (1, ts, width), dev).unwrap();
        assert!(rel(s, &folded) < 1e-4, "backward {}", rel(s, &folded));
    }
    // A context must be an earlier segment without one of its own.
    let later = [
        Segment {
            len: 3,
            context: Some(1),
        },
        Segment {
            len: 4,
            context: None,
        },
    ];
    let chained = [
        shared[0],
        shared[1],
        Segment {
            len: 5,
            context: Some(1),
        },
    ];
    assert!(positions(&later).is_none() && positions(&chained).is_none());
    let (qs, ks) = (
        Tensor::from_vec(q, (1, ts, wq), dev).unwrap(),
        Tensor::from_vec(k, (1, ts, wkv), dev).unwrap(),
    );
    assert!(attention(&qs, &ks, &ks, &tables_s, &chained, h).is_err());
}

#[test]
fn the_tied_nll_matches_log_softmax_and_gather_forward_and_backward() {
    use candle_nn::ops::log_softmax;
    let dev = &Device::Cpu;
    // More rows than one block of logits, so the blocks' seams are crossed.
    let (rows, d, vocab) = (130usize, 8usize, 50usize);
    let embd = Tensor::from_vec(noise(vocab * d, 31), (vocab, d), dev).unwrap();
    let targets: Vec<u32> = (0..rows as u32).map(|i| (i * 7) % vocab as u32).collect();
    let args = [(noise(rows * d, 32), vec![rows, d])];
    let c = Tensor::from_vec(noise(rows, 33), rows, dev).unwrap();
    let composed = |v: &[Tensor]| {
        let logp = log_softmax(&v[0].matmul(&embd.t()?)?, 1)?;
        let t = Tensor::from_vec(targets.clone(), (rows, 1), dev)?;
        logp.gather(&t, 1)?.squeeze(1)?.neg()
    };
    let (yc, gc) = through_all(composed, &args, &c);
    // The gradient prepared by a training forward, and recomputed in the backward of one that did not.
    for for_training in [true, false] {
        let fused = |v: &[Tensor]| tied_nll(&v[0], &embd, &targets, for_training);
        let (yf, gf) = through_all(fused, &args, &c);
        assert!(rel(&yf, &yc) < 1e-5, "nll forward {}", rel(&yf, &yc));
        assert!(
            rel(&gf[0], &gc[0]) < 1e-4,
            "nll backward ({for_training}) {}",
            rel(&gf[0], &gc[0])
        );
    }
    let h = Tensor::from_vec(noise(rows * d, 32), (rows, d), dev).unwrap();
    let mut bad = targets.clone();
    bad[3] = vocab as u32;
    assert!(tied_nll(&h, &embd, &bad, true).is_err());
    assert!(tied_nll(&h, &embd, &targets[1..], true).is_err());
    assert!(tied_nll(&h.narrow(1, 0, 4).unwrap(), &embd, &targets, true).is_err());
    let empty = Tensor::zeros((vocab, 0), candle_core::DType::F32, dev).unwrap();
    assert!(tied_nll(&h.narrow(1, 0, 0).unwrap(), &empty, &targets, true).is_err());
}
