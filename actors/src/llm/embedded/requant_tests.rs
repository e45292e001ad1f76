//! The `Q4_1` → `Q8_0` copy on small GGUF files built here, byte by byte, as the spec lays them out.

use half::f16;

use super::*;

/// A GGUF v3 file: `kv` metadata entries (already encoded) and tensors `(name, dims, ggml type, data)`.
fn gguf(kv: &[Vec<u8>], tensors: &[(&str, &[u64], u32, Vec<u8>)], alignment: u64) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kv.len() as u64).to_le_bytes());
    for e in kv {
        out.extend_from_slice(e);
    }
    let mut offset = 0u64;
    for (name, dims, ty, data) in tensors {
        out.extend_from_slice(&(name.len() as u64).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in *dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset = align(offset + data.len() as u64, alignment);
    }
    out.resize(align(out.len() as u64, alignment) as usize, 0);
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
        out.resize(align(out.len() as u64, alignment) as usize, 0);
    }
    out
}

fn key(k: &str, ty: u32, value: &[u8]) -> Vec<u8> {
    let mut e = (k.len() as u64).to_le_bytes().to_vec();
    e.extend_from_slice(k.as_bytes());
    e.extend_from_slice(&ty.to_le_bytes());
    e.extend_from_slice(value);
    e
}

fn string_array(items: &[&str]) -> Vec<u8> {
    let mut v = T_STRING.to_le_bytes().to_vec();
    v.extend_from_slice(&(items.len() as u64).to_le_bytes());
    for s in items {
        v.extend_from_slice(&(s.len() as u64).to_le_bytes());
        v.extend_from_slice(s.as_bytes());
    }
    v
}

/// `Q4_1` blocks of the weights `w` (a multiple of 32), quantized as ggml's reference does.
fn q4_1(w: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in w.chunks(BLOCK) {
        let min = b.iter().copied().fold(f32::INFINITY, f32::min);
        let max = b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 15.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
        for j in 0..BLOCK / 2 {
            let lo = (((b[j] - min) * id + 0.5) as u8).min(15);
            let hi = (((b[j + BLOCK / 2] - min) * id + 0.5) as u8).min(15);
            out.push(lo | (hi << 4));
        }
    }
    out
}

fn dequant_q4_1(b: &[u8]) -> Vec<f32> {
    let mut w = Vec::new();
    for blk in b.chunks_exact(Q4_1_BYTES) {
        let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        let m = f16::from_le_bytes([blk[2], blk[3]]).to_f32();
        let mut x = [0f32; BLOCK];
        for (j, q) in blk[4..].iter().enumerate() {
            x[j] = f32::from(q & 0xf) * d + m;
            x[j + 16] = f32::from(q >> 4) * d + m;
        }
        w.extend_from_slice(&x);
    }
    w
}

fn dequant_q8_0(b: &[u8]) -> Vec<f32> {
    let mut w = Vec::new();
    for blk in b.chunks_exact(Q8_0_BYTES) {
        let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        w.extend(blk[2..].iter().map(|&q| f32::from(q as i8) * d));
    }
    w
}

/// A tensor read back: name, ggml type, data.
type Tensor = (String, u32, Vec<u8>);

/// Reads back a file this module wrote: its metadata bytes and each tensor.
fn parse(file: &[u8]) -> (Vec<u8>, Vec<Tensor>) {
    let mut c = Cursor { b: file, at: 4 };
    c.u32().unwrap();
    let nt = c.len().unwrap();
    let nkv = c.len().unwrap();
    let kv0 = c.at;
    for _ in 0..nkv {
        c.string().unwrap();
        let t = c.u32().unwrap();
        c.skip_value(t, 0).unwrap();
    }
    let kv = file[kv0..c.at].to_vec();
    let mut infos = Vec::new();
    for _ in 0..nt {
        let name = String::from_utf8(c.string().unwrap().to_vec()).unwrap();
        let nd = c.u32().unwrap();
        let dims: Vec<u64> = (0..nd).map(|_| c.u64().unwrap()).collect();
        let ty = c.u32().unwrap();
        let off = c.u64().unwrap();
        infos.push((name, dims, ty, off));
    }
    let start = align(c.at as u64, DEFAULT_ALIGNMENT) as usize;
    let tensors = infos
        .into_iter()
        .map(|(name, dims, ty, off)| {
            let n: u64 = dims.iter().product();
            let size = match ty {
                GGML_Q8_0 => n as usize / BLOCK * Q8_0_BYTES,
                GGML_Q4_1 => n as usize / BLOCK * Q4_1_BYTES,
                _ => n as usize * 4,
            };
            let at = start + off as usize;
            (name, ty, file[at..at + size].to_vec())
        })
        .collect();
    (kv, tensors)
}

fn weights(n: usize, seed: u32) -> Vec<f32> {
    // Deterministic, spread around zero like trained weights, some blocks all positive.
    (0..n)
        .map(|i| {
            let x = ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                / 16_777_216.0;
            let shift = if (i / BLOCK).is_multiple_of(3) {
                0.5
            } else {
                0.0
            };
            (x - 0.5) * 0.2 + shift * 0.1
        })
        .collect()
}

#[test]
fn q4_1_tensors_become_q8_0_of_the_same_weights_and_everything_else_is_copied() {
    let w = weights(4 * BLOCK * 2, 7);
    let norm: Vec<u8> = [1.0f32, -2.5, 3.25, 0.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let kv = vec![
        key(
            "general.architecture",
            T_STRING,
            &[&5u64.to_le_bytes()[..], b"llama"].concat(),
        ),
        key("general.file_type", T_U32, &3u32.to_le_bytes()),
        key(
            "tokenizer.ggml.tokens",
            T_ARRAY,
            &string_array(&["a", "\u{120}b", "<|im_end|>"]),
        ),
    ];
    let src = gguf(
        &kv,
        &[
            (
                "blk.0.ffn_up.weight",
                &[BLOCK as u64 * 2, 4],
                GGML_Q4_1,
                q4_1(&w),
            ),
            ("output_norm.weight", &[4], 0, norm.clone()),
        ],
        DEFAULT_ALIGNMENT,
    );
    let out = to_q8_0(&src)
        .unwrap()
        .expect("a copy: the file has Q4_1 weights");
    let (kv_out, tensors) = parse(&out);

    // Metadata byte for byte, but the file type (MOSTLY_Q4_1 = 3 → MOSTLY_Q8_0 = 7).
    let (kv_in, _) = parse(&src);
    assert_eq!(kv_out.len(), kv_in.len());
    let changed: Vec<usize> = (0..kv_in.len())
        .filter(|&i| kv_in[i] != kv_out[i])
        .collect();
    assert_eq!(changed.len(), 1, "only general.file_type's value differs");
    assert_eq!(kv_in[changed[0]], 3);
    assert_eq!(kv_out[changed[0]], 7);

    assert_eq!(tensors[1], ("output_norm.weight".into(), 0, norm));
    let (name, ty, data) = &tensors[0];
    assert_eq!((name.as_str(), *ty), ("blk.0.ffn_up.weight", GGML_Q8_0));
    let before = dequant_q4_1(&q4_1(&w));
    let after = dequant_q8_0(data);
    assert_eq!(before.len(), after.len());
    for (b, blk) in before.chunks(BLOCK).zip(after.chunks(BLOCK)) {
        let amax = b.iter().fold(0f32, |a, x| a.max(x.abs()));
        // Half a Q8_0 step, plus the f16 rounding of the scale.
        let bound = amax / 127.0 * 0.5 + amax * 1e-3;
        for (x, y) in b.iter().zip(blk) {
            assert!((x - y).abs() <= bound, "{x} → {y} (bound {bound})");
        }
    }
}

#[test]
fn offsets_follow_the_files_alignment_and_llama_cpps_size_rule() {
    let w = weights(BLOCK * 3, 1);
    let align_kv = key("general.alignment", T_U32, &64u32.to_le_bytes());
    let odd: Vec<u8> = (0..12u8).collect(); // 3 f32, not a multiple of 64 bytes
    let src = gguf(
        &[align_kv],
        &[
            ("a", &[3], 0, odd.clone()),
            ("b", &[BLOCK as u64 * 3], GGML_Q4_1, q4_1(&w)),
            ("c", &[3], 0, odd),
        ],
        64,
    );
    let out = to_q8_0(&src).unwrap().unwrap();
    let mut c = Cursor { b: &out, at: 8 };
    let nt = c.len().unwrap();
    let nkv = c.len().unwrap();
    for _ in 0..nkv {
        c.string().unwrap();
        let t = c.u32().unwrap();
        c.skip_value(t, 0).unwrap();
    }
    // llama.cpp checks each offset against the sum of the earlier tensors' sizes, each padded to 64.
    let mut want = 0u64;
    for _ in 0..nt {
        let name = c.string().unwrap().to_vec();
        let nd = c.u32().unwrap();
        let n: u64 = (0..nd).map(|_| c.u64().unwrap()).product();
        let ty = c.u32().unwrap();
        assert_eq!(c.u64().unwrap(), want, "{}", String::from_utf8_lossy(&name));
        let bytes = if ty == GGML_Q8_0 { n / 32 * 34 } else { n * 4 };
        want = align(want + bytes, 64);
    }
    assert_eq!(align(c.at as u64, 64) + want, out.len() as u64);
}

#[test]
fn a_file_without_q4_1_weights_gets_no_copy_and_a_broken_one_an_error() {
    let f32s: Vec<u8> = [1.0f32; 32].iter().flat_map(|x| x.to_le_bytes()).collect();
    let plain = gguf(&[], &[("w", &[32], 0, f32s)], DEFAULT_ALIGNMENT);
    assert!(to_q8_0(&plain).unwrap().is_none());

    let w = weights(BLOCK, 3);
    let good = gguf(
        &[],
        &[("w", &[BLOCK as u64], GGML_Q4_1, q4_1(&w))],
        DEFAULT_ALIGNMENT,
    );
    assert!(to_q8_0(&good).unwrap().is_some());
    // Every cut of the file is an error, never a panic or a copy.
    for cut in 0..good.len() - 1 {
        if let Ok(Some(_)) = to_q8_0(&good[..cut]) {
            // A cut inside the trailing padding still holds every byte of the data.
            assert!(
                cut >= good.len() - (DEFAULT_ALIGNMENT as usize),
                "cut at {cut} made a copy"
            );
        }
    }
    assert!(matches!(
        to_q8_0(b"GGML\x03\0\0\0"),
        Err(RequantError::Format(_))
    ));
    let mut unknown = gguf(&[key("x", 99, &[])], &[], DEFAULT_ALIGNMENT);
    assert!(matches!(to_q8_0(&unknown), Err(RequantError::Format(_))));
    unknown[4] = 1; // GGUF v1: lengths were 32-bit
    assert!(matches!(to_q8_0(&unknown), Err(RequantError::Format(_))));
}

#[test]
fn the_copy_is_made_once_beside_the_model_and_made_again_when_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.Q4_1.gguf");
    let w = weights(BLOCK * 4, 9);
    std::fs::write(
        &model,
        gguf(
            &[],
            &[("w", &[BLOCK as u64 * 4], GGML_Q4_1, q4_1(&w))],
            DEFAULT_ALIGNMENT,
        ),
    )
    .unwrap();
    let sha = super::super::model_file::file_sha256(&model).unwrap();
    let copy = serving_copy(&model, &sha).unwrap().unwrap();
    assert_eq!(
        copy,
        dir.path().join(format!("m.Q4_1.{}.q8_0.gguf", &sha[..16]))
    );
    let first = std::fs::read(&copy).unwrap();
    let digest = std::fs::read_to_string(sidecar(&copy)).unwrap();
    assert_eq!(digest.trim(), super::super::model_file::sha256_hex(&first));

    // A second load reuses it (same inode: not rewritten).
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(&copy).unwrap().ino();
    assert_eq!(serving_copy(&model, &sha).unwrap().unwrap(), copy);
    assert_eq!(std::fs::metadata(&copy).unwrap().ino(), ino);

    // A damaged copy is made again, whole.
    let mut bad = first.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    std::fs::write(&copy, &bad).unwrap();
    assert_eq!(serving_copy(&model, &sha).unwrap().unwrap(), copy);
    assert_eq!(std::fs::read(&copy).unwrap(), first);
    // Only the model, the copy and its digest are left: no temporary file.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[test]
fn the_header_probe_reads_past_its_first_bytes_when_the_header_is_longer() {
    let dir = tempfile::tempdir().unwrap();
    // Metadata longer than the first probe: the probe must double until the tensor table is in.
    let long = "x".repeat(HEADER_PROBE as usize + 1000);
    let big_kv = key(
        "general.description",
        T_STRING,
        &[&(long.len() as u64).to_le_bytes()[..], long.as_bytes()].concat(),
    );
    let w = weights(BLOCK, 5);
    let q4 = dir.path().join("q4.gguf");
    std::fs::write(
        &q4,
        gguf(
            std::slice::from_ref(&big_kv),
            &[("w", &[BLOCK as u64], GGML_Q4_1, q4_1(&w))],
            DEFAULT_ALIGNMENT,
        ),
    )
    .unwrap();
    assert!(file_has_q4_1(&q4).unwrap());
    let f32s: Vec<u8> = [1.0f32; 32].iter().flat_map(|x| x.to_le_bytes()).collect();
    let plain = dir.path().join("f32.gguf");
    std::fs::write(
        &plain,
        gguf(&[big_kv], &[("w", &[32], 0, f32s)], DEFAULT_ALIGNMENT),
    )
    .unwrap();
    assert!(!file_has_q4_1(&plain).unwrap());
    // A file cut inside its header is an error, not a loop.
    let cut = dir.path().join("cut.gguf");
    std::fs::write(
        &cut,
        &std::fs::read(&q4).unwrap()[..HEADER_PROBE as usize + 10],
    )
    .unwrap();
    assert!(matches!(
        file_has_q4_1(&cut),
        Err(RequantError::Truncated(_))
    ));
}
