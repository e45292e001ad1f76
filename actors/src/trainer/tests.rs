//! The trainer on a tiny synthetic llama (2 blocks, width 32, vocabulary 64), written as a GGUF file the way
//! the real model is: seconds per test, same code path as the 135M model.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::adapter::{adapter_bytes, read_adapter};
use super::llama::{LlamaLora, LoraSpec, TARGETS};
use super::train::{
    batch_at, mean_nll, packed_nll, packs, sequence_nll, train, Pack, Schedule, Sequence,
    TrainConfig,
};

const VOCAB: usize = 64;
const EMBD: usize = 32;
const FF: usize = 64;
const LAYERS: usize = 2;

/// A random llama GGUF: 4 query heads, 2 key/value heads.
fn tiny_gguf() -> Vec<u8> {
    let dev = Device::Cpu;
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut put = |name: String, t: Tensor| {
        tensors.push((name, QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    };
    let r = |shape: (usize, usize)| Tensor::randn(0f32, 0.2, shape, &dev).unwrap();
    let ones = |n: usize| Tensor::ones(n, candle_core::DType::F32, &dev).unwrap();
    put("token_embd.weight".into(), r((VOCAB, EMBD)));
    put("output_norm.weight".into(), ones(EMBD));
    for i in 0..LAYERS {
        put(format!("blk.{i}.attn_norm.weight"), ones(EMBD));
        put(format!("blk.{i}.ffn_norm.weight"), ones(EMBD));
        put(format!("blk.{i}.attn_q.weight"), r((EMBD, EMBD)));
        put(format!("blk.{i}.attn_k.weight"), r((EMBD / 2, EMBD)));
        put(format!("blk.{i}.attn_v.weight"), r((EMBD / 2, EMBD)));
        put(format!("blk.{i}.attn_output.weight"), r((EMBD, EMBD)));
        put(format!("blk.{i}.ffn_gate.weight"), r((FF, EMBD)));
        put(format!("blk.{i}.ffn_up.weight"), r((FF, EMBD)));
        put(format!("blk.{i}.ffn_down.weight"), r((EMBD, FF)));
    }
    use gguf_file::Value as V;
    let meta = [
        ("general.architecture", V::String("llama".into())),
        ("llama.block_count", V::U32(LAYERS as u32)),
        ("llama.embedding_length", V::U32(EMBD as u32)),
        ("llama.attention.head_count", V::U32(4)),
        ("llama.attention.head_count_kv", V::U32(2)),
        ("llama.feed_forward_length", V::U32(FF as u32)),
        ("llama.attention.layer_norm_rms_epsilon", V::F32(1e-5)),
        ("llama.rope.freq_base", V::F32(10_000.0)),
    ];
    let meta: Vec<(&str, &V)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &meta, &tensors).unwrap();
    out.into_inner()
}

/// Every LoRA tensor's gradient of loss `a` is within 1e-4 of its gradient of loss `b`.
fn same_gradients(m: &LlamaLora, a: &Tensor, b: &Tensor) {
    let (ga, gb) = (a.backward().unwrap(), b.backward().unwrap());
    for v in m.vars() {
        let (x, y) = (
            ga.get(v.as_tensor()).unwrap(),
            gb.get(v.as_tensor()).unwrap(),
        );
        assert!(max_abs_diff(x, y) < 1e-4, "{:?}", v.dims());
    }
}

/// The largest element-wise difference of two tensors of one shape.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn spec(targets: &[&str]) -> LoraSpec {
    LoraSpec {
        targets: targets.iter().map(|t| t.to_string()).collect(),
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        seed: 7,
    }
}

fn load(bytes: &[u8], s: LoraSpec) -> LlamaLora {
    LlamaLora::load(&mut Cursor::new(bytes), s).unwrap()
}

/// Sequences with a habit to learn: after the prompt tokens, the answer always starts with token 42.
fn habit() -> Vec<Sequence> {
    (0..6u32)
        .map(|i| {
            let tokens = vec![1, 10 + i, 20 + i, 30, 42, 43, 44];
            let learn = vec![false, false, false, false, true, true, true];
            Sequence { tokens, learn }
        })
        .collect()
}

fn cfg(steps: usize) -> TrainConfig {
    TrainConfig {
        steps,
        batch: 2,
        lr: 1e-2,
        warmup_steps: 2,
        schedule: Schedule::Cosine,
        weight_decay: 0.0,
        seed: 3,
        checkpoint_every: 0,
        pack_tokens: 1024,
        share_prefix: 0,
    }
}

fn values(m: &LlamaLora) -> BTreeMap<String, (Vec<f32>, Vec<f32>)> {
    m.lora()
        .into_iter()
        .map(|(k, p)| {
            let f = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (k, (f(p.a.as_tensor()), f(p.b.as_tensor())))
        })
        .collect()
}

#[test]
fn a_fresh_adapter_is_exactly_the_base_model() {
    let g = tiny_gguf();
    let with = load(&g, spec(&TARGETS));
    let without = load(&g, spec(&[]));
    let tokens = Tensor::new(&[[1u32, 5, 9, 13, 2]], &Device::Cpu).unwrap();
    let a = with.forward(&tokens, false).unwrap();
    let b = without.forward(&tokens, false).unwrap();
    assert_eq!(a.dims(), [1, 5, VOCAB]);
    let diff = max_abs_diff(&a, &b);
    assert_eq!(diff, 0.0, "B starts at zero, so LoRA adds nothing yet");
}

#[test]
fn gradients_reach_every_lora_tensor_and_no_frozen_one() {
    let g = tiny_gguf();
    let m = load(&g, spec(&TARGETS));
    // Move B off zero so A's gradient is not zero by construction.
    for p in m.lora().values() {
        let b = Tensor::randn(0f32, 0.1, p.b.dims(), &Device::Cpu).unwrap();
        p.b.set(&b).unwrap();
    }
    let (loss, n) = sequence_nll(&m, &habit()[0], true).unwrap();
    assert_eq!(n, 3);
    let grads = loss.backward().unwrap();
    assert_eq!(m.lora().len(), LAYERS * TARGETS.len());
    for (name, p) in m.lora() {
        for (which, v) in [("A", &p.a), ("B", &p.b)] {
            let gv = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name} {which}"));
            let norm = gv
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(norm > 0.0, "{name} {which}: zero gradient");
        }
    }
    for (name, t) in m.frozen() {
        assert!(grads.get(&t).is_none(), "frozen {name} got a gradient");
    }
}

#[test]
fn training_lowers_the_loss_on_the_habit() {
    let g = tiny_gguf();
    let m = load(&g, spec(&TARGETS));
    let data = habit();
    let before = mean_nll(&m, &data).unwrap();
    let mut seen = Vec::new();
    let out = train(
        &m,
        &data,
        &cfg(30),
        None,
        "t",
        &AtomicBool::new(false),
        |p| seen.push(p.clone()),
    )
    .unwrap();
    let after = mean_nll(&m, &data).unwrap();
    assert_eq!(out.steps, 30);
    assert_eq!(seen.len(), 30);
    assert_eq!(seen.last().unwrap().step, 30);
    assert!(seen
        .iter()
        .all(|p| p.tokens_per_s > 0.0 && p.loss.is_finite()));
    assert!(after < before * 0.5, "loss {before:.3} → {after:.3}");
}

/// Packing is an optimisation, never a change of meaning: packed sequences see only themselves, count their
/// positions from 0, and their summed loss has the gradient of the losses taken one by one.
#[test]
fn packed_sequences_give_the_same_states_loss_and_gradients_as_one_by_one() {
    let g = tiny_gguf();
    let m = load(&g, spec(&["attn_q", "attn_v", "ffn_down"]));
    // B is zero at the start, so give the pairs values: every path then carries signal.
    for p in m.lora().values() {
        p.b.set(&Tensor::randn(0f32, 0.3, p.b.dims(), &Device::Cpu).unwrap())
            .unwrap();
    }
    let a = Sequence {
        tokens: vec![1, 5, 9, 13, 2, 7],
        learn: vec![false, false, true, true, true, true],
    };
    let b = Sequence {
        tokens: vec![3, 8, 42, 43],
        learn: vec![false, false, true, true],
    };
    let dev = Device::Cpu;
    let alone = |s: &Sequence| {
        let t = Tensor::new(&s.tokens[..s.tokens.len() - 1], &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        m.hidden(&t, false).unwrap().squeeze(0).unwrap()
    };
    let mut joined = a.tokens[..5].to_vec();
    joined.extend_from_slice(&b.tokens[..3]);
    let joined = Tensor::new(joined.as_slice(), &dev)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let packed = m
        .hidden_packed(&joined, &[5, 3], false)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let expected = Tensor::cat(&[alone(&a), alone(&b)], 0).unwrap();
    assert!(max_abs_diff(&packed, &expected) < 1e-5);
    // The packed loss and its gradient against the two single ones.
    let (la, na) = sequence_nll(&m, &a, false).unwrap();
    let (lb, nb) = sequence_nll(&m, &b, false).unwrap();
    let (lp, np) = packed_nll(&m, &Pack::new(vec![&a, &b], 0), false).unwrap();
    assert_eq!(np, na + nb);
    let single = (&la + &lb).unwrap();
    assert!(max_abs_diff(&lp, &single) < 1e-4);
    same_gradients(&m, &single, &lp);
    assert!(
        m.hidden_packed(&joined, &[5, 2], false).is_err(),
        "lengths must cover the row"
    );
}

/// Sharing a prefix is an optimisation too: sequences that begin alike, the prefix computed once, give the
/// loss and gradients of each run whole — including a learned token right after the prefix, predicted from a
/// shared row once per sequence — and the shared rows let more sequences into a pass.
#[test]
fn a_shared_prefix_gives_the_loss_and_gradients_of_each_sequence_whole() {
    let g = tiny_gguf();
    let m = load(
        &g,
        spec(&["attn_q", "attn_k", "attn_v", "attn_output", "ffn_down"]),
    );
    for p in m.lora().values() {
        p.b.set(&Tensor::randn(0f32, 0.3, p.b.dims(), &Device::Cpu).unwrap())
            .unwrap();
    }
    let seq = |tail: &[u32], learn_from: usize| {
        let tokens: Vec<u32> = [4, 11, 6, 20, 9].iter().chain(tail).copied().collect();
        let learn = (0..tokens.len()).map(|i| i >= learn_from).collect();
        Sequence { tokens, learn }
    };
    let (a, b, c) = (
        seq(&[1, 5, 9], 5),
        seq(&[30, 2, 17, 8, 3], 4),
        seq(&[9, 9], 6),
    );
    let shared = Pack::new(vec![&a, &b, &c], 3);
    assert_eq!(shared.shared(), 5, "the five common tokens");
    assert_eq!(
        Pack::new(vec![&a, &b, &c], 6).shared(),
        0,
        "below the minimum"
    );
    assert_eq!(
        Pack::new(vec![&a], 1).shared(),
        0,
        "one sequence shares nothing"
    );
    let d = seq(&[], 4);
    assert_eq!(
        Pack::new(vec![&a, &d], 1).shared(),
        3,
        "every sequence keeps a row of its own"
    );
    let (ls, ns) = packed_nll(&m, &shared, false).unwrap();
    let (lw, nw) = packed_nll(&m, &Pack::new(vec![&a, &b, &c], 0), false).unwrap();
    assert_eq!(ns, nw);
    assert!(max_abs_diff(&ls, &lw) < 1e-4, "{ls} against {lw}");
    same_gradients(&m, &ls, &lw);
    // A budget of 14 tokens holds a and b whole (8 + 10 = 18) only with their prefix counted once (5 + 3 + 5).
    let data = [a.clone(), b.clone(), c.clone()];
    let sizes = |share| -> Vec<usize> {
        packs(&data, &[0, 1, 2], 14, share)
            .iter()
            .map(|p| p.len())
            .collect()
    };
    assert_eq!(sizes(0), [1, 1, 1]);
    assert_eq!(sizes(3), [2, 1]);
}

#[test]
fn a_stopped_run_resumes_from_its_checkpoint_exactly() {
    let g = tiny_gguf();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("run.ckpt");
    let data = habit();
    let mut c = cfg(8);
    c.checkpoint_every = 3;
    // With dropout on, as shipped: the resumed steps must draw the masks the uninterrupted run drew.
    let spec = |t: &[&str]| LoraSpec {
        dropout: 0.1,
        ..spec(t)
    };
    // The whole run, without a stop.
    let straight = load(&g, spec(&["attn_q", "ffn_down"]));
    train(
        &straight,
        &data,
        &c,
        None,
        "f",
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap();
    // Stopped after step 4 (the cancel is seen before step 5), then resumed by a fresh process's model.
    let cancel = AtomicBool::new(false);
    let first = load(&g, spec(&["attn_q", "ffn_down"]));
    let out = train(&first, &data, &c, Some(&ck), "f", &cancel, |p| {
        if p.step == 4 {
            cancel.store(true, Ordering::SeqCst);
        }
    })
    .unwrap();
    assert!(out.cancelled);
    assert_eq!(out.steps, 4);
    let second = load(&g, spec(&["attn_q", "ffn_down"]));
    let out = train(
        &second,
        &data,
        &c,
        Some(&ck),
        "f",
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap();
    assert_eq!((out.resumed_from, out.steps), (4, 8));
    let (a, b) = (values(&straight), values(&second));
    for (k, (sa, sb)) in &a {
        let (ra, rb) = &b[k];
        let d = sa
            .iter()
            .zip(ra)
            .chain(sb.iter().zip(rb))
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-5, "{k}: resumed run differs by {d}");
    }
    // A checkpoint of another run (other fingerprint) is not resumed.
    let third = load(&g, spec(&["attn_q", "ffn_down"]));
    let out = train(
        &third,
        &data,
        &c,
        Some(&ck),
        "other",
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap();
    assert_eq!(out.resumed_from, 0);
}

#[test]
fn an_exported_adapter_reads_back_and_gives_the_same_logits() {
    let g = tiny_gguf();
    let m = load(&g, spec(&TARGETS));
    train(
        &m,
        &habit(),
        &cfg(5),
        None,
        "x",
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap();
    let bytes = adapter_bytes(&m).unwrap();
    let a = read_adapter(&bytes).unwrap();
    assert_eq!(a.alpha, 8.0);
    assert_eq!(a.pairs.len(), LAYERS * TARGETS.len());
    let (qa, qb) = &a.pairs["blk.0.attn_q.weight"];
    assert_eq!((qa.dims(), qb.dims()), (&[4, EMBD][..], &[EMBD, 4][..]));
    let fresh = load(&g, spec(&TARGETS));
    fresh.set_lora(&a.pairs).unwrap();
    let tokens = Tensor::new(&[[1u32, 12, 22, 30]], &Device::Cpu).unwrap();
    let x = m.forward(&tokens, false).unwrap();
    let y = fresh.forward(&tokens, false).unwrap();
    let d = max_abs_diff(&x, &y);
    assert_eq!(d, 0.0);
    assert!(
        read_adapter(&tiny_gguf()).is_err(),
        "a model is not an adapter"
    );
}

#[test]
fn bad_specs_and_sequences_are_refused() {
    let g = tiny_gguf();
    let mut s = spec(&["attn_qq"]);
    assert!(LlamaLora::load(&mut Cursor::new(&g), s.clone()).is_err());
    s.targets = vec!["attn_q".into()];
    s.rank = 0;
    assert!(LlamaLora::load(&mut Cursor::new(&g), s).is_err());
    let m = load(&g, spec(&["attn_q"]));
    let short = Sequence {
        tokens: vec![1],
        learn: vec![true],
    };
    assert!(sequence_nll(&m, &short, false).is_err());
    let nothing = vec![Sequence {
        tokens: vec![1, 2, 3],
        learn: vec![false; 3],
    }];
    assert!(train(
        &m,
        &nothing,
        &cfg(1),
        None,
        "n",
        &AtomicBool::new(false),
        |_| {}
    )
    .is_err());
}

#[test]
fn the_data_order_is_a_seeded_shuffle_per_epoch_and_the_rate_warms_then_decays() {
    // Each epoch visits every example once; the same seed and step give the same batch.
    let mut seen = Vec::new();
    for s in 0..5 {
        let (epoch, b) = batch_at(10, 2, 9, s);
        assert_eq!(epoch, 1);
        seen.extend(b);
    }
    seen.sort();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    assert_eq!(batch_at(10, 2, 9, 7), batch_at(10, 2, 9, 7));
    assert_eq!(batch_at(10, 4, 9, 2).0, 1, "items 8..12 start in epoch 1");
    let c = cfg(10);
    assert!((c.lr_at(0) - 0.005).abs() < 1e-12);
    assert!((c.lr_at(2) - 0.01).abs() < 1e-12);
    assert!(c.lr_at(9) < c.lr_at(5) && c.lr_at(5) < c.lr_at(2));
}

#[test]
fn the_gate_swaps_only_on_enough_improvement_and_little_regression() {
    use super::ctx::RunReport;
    use super::pipeline::gate;
    let shipped = crate::settings::LoadedSettings::load(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/settings.toml"),
    )
    .unwrap();
    let s = shipped.settings.trainer;
    let r = |hb: f64, ha: f64, gb: f64, ga: f64| RunReport {
        persona: "BRICK".into(),
        outcome: String::new(),
        model: None,
        heldout_before: hb,
        heldout_after: ha,
        general_before: gb,
        general_after: ga,
        steps: 1,
        resumed_from: 0,
        reason: String::new(),
        exam_before: None,
        exam_after: None,
    };
    assert_eq!(gate(&r(2.0, 1.0, 1.0, 1.01), &s), None);
    let small = gate(&r(2.0, 1.99, 1.0, 1.0), &s).unwrap();
    assert!(small.contains("min_improvement"), "{small}");
    let worse = gate(&r(2.0, 1.0, 1.0, 1.5), &s).unwrap();
    assert!(worse.contains("max_regression"), "{worse}");
    assert!(
        gate(&r(2.0, f64::NAN, 1.0, 1.0), &s).is_some(),
        "NaN never passes"
    );
    // No general set: only the held-out measure decides.
    assert_eq!(gate(&r(2.0, 1.0, 0.0, 0.0), &s), None);
}

#[test]
fn a_small_set_gets_at_most_max_epochs_passes_and_a_large_one_all_its_steps() {
    use super::train::bounded_steps;
    // A life's first trigger: 9 examples, batch 4, 20 steps asked = 9 passes; two passes are 5 steps.
    assert_eq!(bounded_steps(20, 2.0, 9, 4), 5);
    assert_eq!(
        bounded_steps(20, 1.0, 9, 4),
        3,
        "a part-filled last step counts"
    );
    // The shipped trigger's 45 training examples: two passes are 23 steps, under 40.
    assert_eq!(bounded_steps(40, 2.0, 45, 4), 23);
    assert_eq!(
        bounded_steps(40, 2.0, 400, 4),
        40,
        "steps still bound a large set"
    );
    assert_eq!(
        bounded_steps(20, 0.0, 9, 4),
        20,
        "0: no bound, as before the setting"
    );
    assert_eq!(bounded_steps(20, 0.01, 1, 4), 1, "one step at least");
    assert_eq!(bounded_steps(20, f64::NAN, 9, 4), 20);
    assert_eq!(bounded_steps(20, 2.0, 9, 0), 18, "batch 0 reads as 1");
}
