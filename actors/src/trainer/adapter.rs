//! Files the trainer writes, all GGUF: the LoRA adapter llama.cpp loads, and the training checkpoint a
//! killed run resumes from.
//!
//! The adapter follows llama.cpp's loader: `general.type = "adapter"`, `general.architecture = "llama"`,
//! `adapter.type = "lora"`, `adapter.lora.alpha` (f32), and per adapted weight `<name>.lora_a` (rank × n_in)
//! and `<name>.lora_b` (n_out × rank), f32. A checkpoint is the same pairs plus AdamW's two moments per
//! tensor (`.m`, `.v`) and the step and settings fingerprint in metadata: resuming needs nothing else, since
//! the data order is a function of the seed and the step.
//!
//! Both are built in memory and written with [`crate::fsutil::atomic_write`]: a kill leaves the old file or
//! the new one, never half of one.

use std::collections::BTreeMap;
use std::io::Cursor;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::llama::{model_err, LlamaLora};
use super::TrainerError;

/// The GGUF bytes of `model`'s LoRA pairs as a llama.cpp adapter.
pub fn adapter_bytes(model: &LlamaLora) -> Result<Vec<u8>, TrainerError> {
    let pairs = model.lora();
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(pairs.len() * 2);
    for (name, p) in &pairs {
        tensors.push((format!("{name}.lora_a"), f32_q(p.a.as_tensor())?));
        tensors.push((format!("{name}.lora_b"), f32_q(p.b.as_tensor())?));
    }
    let meta = [
        ("general.type", gguf_file::Value::String("adapter".into())),
        (
            "general.architecture",
            gguf_file::Value::String("llama".into()),
        ),
        ("adapter.type", gguf_file::Value::String("lora".into())),
        (
            "adapter.lora.alpha",
            gguf_file::Value::F32(model.spec().alpha),
        ),
    ];
    write(&meta, &tensors)
}

/// An adapter file read back: its alpha and `(A, B)` per adapted weight name.
#[derive(Debug)]
pub struct Adapter {
    /// `adapter.lora.alpha`.
    pub alpha: f32,
    /// `(A, B)` by GGUF weight name (`blk.N.attn_q.weight`).
    pub pairs: BTreeMap<String, (Tensor, Tensor)>,
}

/// Reads an adapter written by [`adapter_bytes`] (or any llama.cpp LoRA adapter with f32 tensors).
pub fn read_adapter(bytes: &[u8]) -> Result<Adapter, TrainerError> {
    let mut r = Cursor::new(bytes);
    let c = gguf_file::Content::read(&mut r).map_err(model_err)?;
    let s = |k: &str| {
        c.metadata
            .get(k)
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_default()
    };
    if s("general.type") != "adapter" || s("adapter.type") != "lora" {
        return Err(TrainerError::Model("not a LoRA adapter file".into()));
    }
    let alpha = c
        .metadata
        .get("adapter.lora.alpha")
        .and_then(|v| v.to_f32().ok())
        .ok_or_else(|| TrainerError::Model("the adapter has no adapter.lora.alpha".into()))?;
    let pairs = read_pairs(&c, &mut r, "")?;
    Ok(Adapter { alpha, pairs })
}

/// Where a training run stands: enough to continue it exactly.
#[derive(Debug)]
pub struct Checkpoint {
    /// Optimizer steps done.
    pub step: usize,
    /// What the run was started with (settings and dataset); a checkpoint of another run is not resumed.
    pub fingerprint: String,
    /// `(A, B)` by GGUF weight name.
    pub pairs: BTreeMap<String, (Tensor, Tensor)>,
    /// AdamW's first and second moments, `(m_A, m_B, v_A, v_B)` by weight name.
    pub moments: BTreeMap<String, [Tensor; 4]>,
}

/// The GGUF bytes of a checkpoint. `moments` is in [`LlamaLora::vars`] order: per pair `(m, v)` of A, then
/// of B.
pub fn checkpoint_bytes(
    model: &LlamaLora,
    step: usize,
    fingerprint: &str,
    moments: &[(Tensor, Tensor)],
) -> Result<Vec<u8>, TrainerError> {
    let pairs = model.lora();
    if moments.len() != pairs.len() * 2 {
        return Err(TrainerError::Model(format!(
            "{} moment pairs for {} LoRA tensors",
            moments.len(),
            pairs.len() * 2
        )));
    }
    let mut tensors = Vec::with_capacity(pairs.len() * 6);
    for (i, (name, p)) in pairs.iter().enumerate() {
        let (ma, va) = &moments[2 * i];
        let (mb, vb) = &moments[2 * i + 1];
        tensors.push((format!("{name}.lora_a"), f32_q(p.a.as_tensor())?));
        tensors.push((format!("{name}.lora_b"), f32_q(p.b.as_tensor())?));
        tensors.push((format!("m.{name}.lora_a"), f32_q(ma)?));
        tensors.push((format!("m.{name}.lora_b"), f32_q(mb)?));
        tensors.push((format!("v.{name}.lora_a"), f32_q(va)?));
        tensors.push((format!("v.{name}.lora_b"), f32_q(vb)?));
    }
    let meta = [
        (
            "general.type",
            gguf_file::Value::String("batos-lora-checkpoint".into()),
        ),
        ("batos.step", gguf_file::Value::U64(step as u64)),
        (
            "batos.fingerprint",
            gguf_file::Value::String(fingerprint.into()),
        ),
    ];
    write(&meta, &tensors)
}

/// Reads a checkpoint written by [`checkpoint_bytes`].
pub fn read_checkpoint(bytes: &[u8]) -> Result<Checkpoint, TrainerError> {
    let mut r = Cursor::new(bytes);
    let c = gguf_file::Content::read(&mut r).map_err(model_err)?;
    let step = match c.metadata.get("batos.step") {
        Some(gguf_file::Value::U64(s)) => *s as usize,
        _ => return Err(TrainerError::Model("the checkpoint has no step".into())),
    };
    let fingerprint = c
        .metadata
        .get("batos.fingerprint")
        .and_then(|v| v.to_string().ok().cloned())
        .unwrap_or_default();
    let pairs = read_pairs(&c, &mut r, "")?;
    let m = read_pairs(&c, &mut r, "m.")?;
    let v = read_pairs(&c, &mut r, "v.")?;
    let mut moments = BTreeMap::new();
    for name in pairs.keys() {
        let (Some((ma, mb)), Some((va, vb))) = (m.get(name), v.get(name)) else {
            return Err(TrainerError::Model(format!(
                "no optimizer state for {name}"
            )));
        };
        moments.insert(
            name.clone(),
            [ma.clone(), mb.clone(), va.clone(), vb.clone()],
        );
    }
    Ok(Checkpoint {
        step,
        fingerprint,
        pairs,
        moments,
    })
}

fn f32_q(t: &Tensor) -> Result<QTensor, TrainerError> {
    QTensor::quantize(t, GgmlDType::F32).map_err(model_err)
}

fn write(
    meta: &[(&str, gguf_file::Value)],
    tensors: &[(String, QTensor)],
) -> Result<Vec<u8>, TrainerError> {
    let meta: Vec<(&str, &gguf_file::Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &meta, &tensors).map_err(model_err)?;
    Ok(out.into_inner())
}

/// `(A, B)` for every `<prefix><name>.lora_a` with its `.lora_b`.
fn read_pairs(
    c: &gguf_file::Content,
    r: &mut Cursor<&[u8]>,
    prefix: &str,
) -> Result<BTreeMap<String, (Tensor, Tensor)>, TrainerError> {
    let dev = Device::Cpu;
    let mut out = BTreeMap::new();
    let mut names: Vec<&String> = c.tensor_infos.keys().collect();
    names.sort();
    for key in names {
        let Some(name) = key
            .strip_prefix(prefix)
            .and_then(|k| k.strip_suffix(".lora_a"))
        else {
            continue;
        };
        if prefix.is_empty() && (key.starts_with("m.") || key.starts_with("v.")) {
            continue;
        }
        let mut load = |k: &str| {
            c.tensor(r, k, &dev)
                .and_then(|q| q.dequantize(&dev))
                .map_err(|e| TrainerError::Model(format!("{k}: {e}")))
        };
        let a = load(key)?;
        let b = load(&format!("{prefix}{name}.lora_b"))?;
        out.insert(name.to_string(), (a, b));
    }
    Ok(out)
}
