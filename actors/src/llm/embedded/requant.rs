//! The weights llama.cpp serves: an 8-bit copy of a model whose weights are in a 4-bit format that llama.cpp's
//! CPU backend can only multiply one token at a time.
//!
//! Why. llama.cpp's CPU matmuls have tiled kernels (llamafile's tinyBLAS, the repacked GEMMs) for 8-bit blocks
//! (`Q8_0`), `Q4_0` and the k-quants, which load a block of weights once and use it for many tokens; for
//! `Q4_1` they have none, so a prompt of n tokens, or a batched step of n requests, costs n dot products
//! per weight row, each unpacking the same nibbles again. The shipped SmolLM2 file is `Q4_1`. Served as
//! `Q8_0` on this 2-core machine (BENCHMARKS.md, issue 19) a 330-token persona prompt prefills in ~0.5 s
//! instead of ~1.05 s, one request decodes ~1.3× faster and four at once ~1.4× faster — and a task is mostly
//! prefill.
//!
//! Why it changes (almost) nothing. A `Q4_1` block holds 32 weights as `d·q + m`, `q` in 0..15; the copy
//! stores the same 32 values as `Q8_0`, `d'·q'` with `q'` in −127..127 and `d' = max|w| / 127`, so each weight
//! moves by at most `d'/2` — a sixteenth to a thirtieth of the `Q4_1` step `d` for a block whose values are
//! spread around zero — plus the rounding of `d'` to f16. Answers are the model's, not a smaller model's; greedy
//! answers can differ from the `Q4_1` file's where two tokens were nearly tied. Every other tensor (the
//! `Q8_0` embeddings, f32 norms) is copied byte for byte, and so is every metadata entry but
//! `general.file_type`.
//!
//! How it is kept. The copy lives beside the model (`<model>.<first 16 hex digits of its SHA-256>.q8_0.gguf`,
//! so a changed model never meets an old copy), is written to a temporary file in the same folder, synced and
//! renamed (a crash leaves no half copy under the final name), and its own SHA-256 goes in a sidecar
//! (`….sha256`, written the same way, after it): a copy whose digest does not match is made again. Copies
//! made at once by two daemons are the same bytes; the last rename wins. Anything that stops the copy (a
//! read-only folder, a full disk, a format this reader does not know) leaves the model served as it is, with
//! a warning — never a daemon that does not start.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use half::f16;

use crate::fsutil;

/// GGUF value type ids (the spec's `gguf_type`).
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

/// ggml tensor type ids.
const GGML_Q4_1: u32 = 3;
const GGML_Q8_0: u32 = 8;
/// `LLAMA_FTYPE_MOSTLY_Q8_0`.
const FTYPE_Q8_0: u32 = 7;
/// Weights per block in both formats.
const BLOCK: usize = 32;
/// Bytes of a `Q4_1` block: f16 scale, f16 minimum, 16 bytes of nibbles.
const Q4_1_BYTES: usize = 20;
/// Bytes of a `Q8_0` block: f16 scale, 32 signed bytes.
const Q8_0_BYTES: usize = 34;
/// Age after which a temporary file in the model's folder is a killed writer's leftover: a copy is written in
/// seconds, so an hour leaves any live writer alone.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);
/// Bytes of a model read first to find its header (SmolLM2's is ~2 MiB: a 49,152-token vocabulary).
const HEADER_PROBE: u64 = 4 << 20;
/// GGUF's default data alignment, when the file names none.
const DEFAULT_ALIGNMENT: u64 = 32;

/// Why no copy was made (the model is then served as it is).
#[derive(Debug, thiserror::Error)]
pub enum RequantError {
    /// The file is not a GGUF this reader understands.
    #[error("not a GGUF file this converter reads: {0}")]
    Format(String),
    /// The bytes end before the structure they describe does.
    #[error("truncated at byte {0}")]
    Truncated(usize),
    /// Reading the model or writing the copy failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn bad(what: impl Into<String>) -> RequantError {
    RequantError::Format(what.into())
}

/// Where the 8-bit copy of `model` (whose SHA-256 is `sha256`, hex) lives.
pub fn copy_path(model: &Path, sha256: &str) -> PathBuf {
    let name = model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model.gguf".into());
    let stem = name.strip_suffix(".gguf").unwrap_or(&name);
    let short: String = sha256.chars().take(16).collect::<String>().to_lowercase();
    model.with_file_name(format!("{stem}.{short}.q8_0.gguf"))
}

fn sidecar(copy: &Path) -> PathBuf {
    let mut s = copy.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// The file to serve for `model`: its 8-bit copy when the model has `Q4_1` weights (made now if it is
/// missing or damaged), otherwise the model itself. `Ok(None)` means "serve the model as it is".
pub fn serving_copy(model: &Path, sha256: &str) -> Result<Option<PathBuf>, RequantError> {
    let copy = copy_path(model, sha256);
    if let Ok(want) = std::fs::read_to_string(sidecar(&copy)) {
        if copy.exists() && super::model_file::file_sha256(&copy)? == want.trim() {
            return Ok(Some(copy));
        }
    }
    if !file_has_q4_1(model)? {
        return Ok(None);
    }
    let bytes = std::fs::read(model)?;
    let Some(out) = to_q8_0(&bytes)? else {
        return Ok(None);
    };
    let dir = copy
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    remove_stale_temps(dir);
    // Readable by whoever may read the model (a temporary file starts private).
    let mode = std::fs::metadata(model)?.permissions().mode() & 0o7777;
    fsutil::atomic_write_mode(&copy, &out, Some(mode))?;
    let digest = super::model_file::sha256_hex(&out);
    fsutil::atomic_write_mode(
        &sidecar(&copy),
        format!("{digest}\n").as_bytes(),
        Some(mode),
    )?;
    Ok(Some(copy))
}

/// Removes temporary files of copies a killed daemon left in `dir` (a model's folder is no data directory,
/// so nothing else cleans it). Only old ones: a younger one may be another daemon's copy being written.
fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMP_AGE);
        if old && e.file_name().to_string_lossy().starts_with(".tmp-") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A little-endian reader over the model's bytes that fails, never panics, at the end.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RequantError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(RequantError::Truncated(self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, RequantError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, RequantError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    fn len(&mut self) -> Result<usize, RequantError> {
        usize::try_from(self.u64()?).map_err(|_| bad("length too large"))
    }
    fn string(&mut self) -> Result<&'a [u8], RequantError> {
        let n = self.len()?;
        self.take(n)
    }
    /// Skips one value of type `t`.
    fn skip_value(&mut self, t: u32, depth: u32) -> Result<(), RequantError> {
        let fixed = match t {
            T_U8 | T_I8 | T_BOOL => 1,
            T_U16 | T_I16 => 2,
            T_U32 | T_I32 | T_F32 => 4,
            T_U64 | T_I64 | T_F64 => 8,
            T_STRING => {
                self.string()?;
                return Ok(());
            }
            T_ARRAY => {
                if depth > 4 {
                    return Err(bad("arrays nested too deep"));
                }
                let et = self.u32()?;
                let n = self.len()?;
                for _ in 0..n {
                    self.skip_value(et, depth + 1)?;
                }
                return Ok(());
            }
            other => return Err(bad(format!("unknown metadata type {other}"))),
        };
        self.take(fixed)?;
        Ok(())
    }
}

struct TensorInfo<'a> {
    name: &'a [u8],
    dims: Vec<u64>,
    ggml_type: u32,
    offset: u64,
}

impl TensorInfo<'_> {
    fn elements(&self) -> Result<usize, RequantError> {
        self.dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad("tensor too large"))
    }
}

fn align(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// A GGUF file's header: everything before the tensor data.
struct Header<'a> {
    version: u32,
    n_kv: usize,
    /// The metadata entries' bytes, as they are in the file.
    kv: &'a [u8],
    /// Where `general.file_type`'s u32 sits in `kv`, to rewrite it in place.
    file_type_at: Option<usize>,
    alignment: u64,
    infos: Vec<TensorInfo<'a>>,
    /// Where the tensor table ends (the data starts at the next multiple of `alignment`).
    end: usize,
}

impl Header<'_> {
    fn has_q4_1(&self) -> bool {
        self.infos.iter().any(|t| t.ggml_type == GGML_Q4_1)
    }
}

/// Parses the header at the start of `src` (which may hold only the header: the data is not looked at).
fn header(src: &[u8]) -> Result<Header<'_>, RequantError> {
    let mut c = Cursor { b: src, at: 0 };
    if c.take(4)? != b"GGUF" {
        return Err(bad("bad magic"));
    }
    let version = c.u32()?;
    if !(2..=3).contains(&version) {
        return Err(bad(format!("GGUF version {version}")));
    }
    let n_tensors = c.len()?;
    let n_kv = c.len()?;
    let kv_start = c.at;
    let mut alignment = DEFAULT_ALIGNMENT;
    let mut file_type_at = None;
    for _ in 0..n_kv {
        let key = c.string()?;
        let t = c.u32()?;
        match (key, t) {
            (b"general.alignment", T_U32) => {
                alignment = u64::from(c.u32()?);
                if alignment == 0 || !alignment.is_power_of_two() {
                    return Err(bad("general.alignment is not a power of two"));
                }
            }
            (b"general.file_type", T_U32) => {
                file_type_at = Some(c.at - kv_start);
                c.u32()?;
            }
            _ => c.skip_value(t, 0)?,
        }
    }
    let kv = &src[kv_start..c.at];
    let mut infos = Vec::with_capacity(n_tensors.min(1 << 16));
    for _ in 0..n_tensors {
        let name = c.string()?;
        let n_dims = c.u32()?;
        if n_dims > 4 {
            return Err(bad("tensor with more than 4 dimensions"));
        }
        let dims = (0..n_dims)
            .map(|_| c.u64())
            .collect::<Result<Vec<_>, _>>()?;
        let ggml_type = c.u32()?;
        let offset = c.u64()?;
        infos.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }
    Ok(Header {
        version,
        n_kv,
        kv,
        file_type_at,
        alignment,
        infos,
        end: c.at,
    })
}

/// Whether the GGUF at `path` has `Q4_1` tensors, reading only as much of it as its header takes (from
/// [`HEADER_PROBE`] bytes, doubling): a model with nothing to convert is not read whole at every start.
fn file_has_q4_1(path: &Path) -> Result<bool, RequantError> {
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut want = HEADER_PROBE;
    loop {
        let mut buf = Vec::new();
        (&f).take(want).read_to_end(&mut buf)?;
        (&f).seek(SeekFrom::Start(0))?;
        match header(&buf) {
            Ok(h) => return Ok(h.has_q4_1()),
            Err(RequantError::Truncated(_)) if want < len => want = want.saturating_mul(2),
            Err(e) => return Err(e),
        }
    }
}

/// The GGUF `src` with every `Q4_1` tensor as `Q8_0`; `None` when it has none. Metadata is copied byte for
/// byte except `general.file_type`, which becomes `MOSTLY_Q8_0`.
pub fn to_q8_0(src: &[u8]) -> Result<Option<Vec<u8>>, RequantError> {
    let h = header(src)?;
    if !h.has_q4_1() {
        return Ok(None);
    }
    let Header {
        version,
        n_kv,
        kv,
        file_type_at,
        alignment,
        infos,
        end,
    } = h;
    let n_tensors = infos.len();
    let data_start =
        usize::try_from(align(end as u64, alignment)).map_err(|_| bad("offset too large"))?;
    // Each tensor's bytes end where the next one (in file order) starts, or at the end of the file.
    let mut by_offset: Vec<usize> = (0..infos.len()).collect();
    by_offset.sort_by_key(|&i| infos[i].offset);
    let mut ends = vec![src.len(); infos.len()];
    for w in by_offset.windows(2) {
        ends[w[0]] = data_start.saturating_add(infos[w[1]].offset as usize);
    }
    let mut datas: Vec<std::borrow::Cow<'_, [u8]>> = Vec::with_capacity(infos.len());
    for (i, t) in infos.iter().enumerate() {
        let start = data_start
            .checked_add(usize::try_from(t.offset).map_err(|_| bad("offset too large"))?)
            .filter(|&s| s <= ends[i] && ends[i] <= src.len())
            .ok_or_else(|| bad("tensor data outside the file"))?;
        let raw = &src[start..ends[i]];
        if t.ggml_type == GGML_Q4_1 {
            let n = t.elements()?;
            if n % BLOCK != 0 {
                return Err(bad("Q4_1 tensor not a whole number of blocks"));
            }
            let need = n / BLOCK * Q4_1_BYTES;
            let blocks = raw
                .get(..need)
                .ok_or_else(|| bad("Q4_1 tensor data truncated"))?;
            datas.push(std::borrow::Cow::Owned(q4_1_to_q8_0(blocks)));
        } else {
            // Its bytes and the padding after them, as they are: a padded size stays padded, so the
            // offsets that follow are the ones llama.cpp computes from each tensor's shape.
            datas.push(std::borrow::Cow::Borrowed(raw));
        }
    }
    let mut out = Vec::with_capacity(src.len() * 3 / 2);
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(n_tensors as u64).to_le_bytes());
    out.extend_from_slice(&(n_kv as u64).to_le_bytes());
    let kv_at = out.len();
    out.extend_from_slice(kv);
    if let Some(at) = file_type_at {
        out[kv_at + at..kv_at + at + 4].copy_from_slice(&FTYPE_Q8_0.to_le_bytes());
    }
    let mut offset = 0u64;
    for (t, d) in infos.iter().zip(&datas) {
        out.extend_from_slice(&(t.name.len() as u64).to_le_bytes());
        out.extend_from_slice(t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        let ty = if t.ggml_type == GGML_Q4_1 {
            GGML_Q8_0
        } else {
            t.ggml_type
        };
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset = align(offset + d.len() as u64, alignment);
    }
    out.resize(align(out.len() as u64, alignment) as usize, 0);
    for d in &datas {
        out.extend_from_slice(d);
        out.resize(align(out.len() as u64, alignment) as usize, 0);
    }
    Ok(Some(out))
}

/// `Q4_1` blocks → `Q8_0` blocks, as ggml's reference quantizer rounds (`d = max|w| / 127`, `q = round(w / d)`).
fn q4_1_to_q8_0(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() / Q4_1_BYTES * Q8_0_BYTES);
    let mut w = [0f32; BLOCK];
    for b in src.chunks_exact(Q4_1_BYTES) {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
        for (j, q) in b[4..].iter().enumerate() {
            w[j] = f32::from(q & 0x0f) * d + m;
            w[j + BLOCK / 2] = f32::from(q >> 4) * d + m;
        }
        let amax = w.iter().fold(0f32, |a, x| a.max(x.abs()));
        let d8 = amax / 127.0;
        let id = if d8 > 0.0 { 1.0 / d8 } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d8).to_le_bytes());
        // In −127..=127 by construction: |w · id| ≤ 127.
        out.extend(w.iter().map(|x| (x * id).round() as i8 as u8));
    }
    out
}

#[cfg(test)]
#[path = "requant_tests.rs"]
mod tests;
