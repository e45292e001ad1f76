//! Checks made on the model file before llama.cpp sees it: it exists, is GGUF, and has the expected SHA-256.

use std::io::Read;
use std::path::Path;

use sha2::Digest;

/// Why the embedded model cannot be used; names the path and the fix.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("embedded model {path}: {problem}. Run scripts/fetch-model.sh (or scripts/setup.sh) to install the default model, or fix llm.embedded.model_path")]
pub struct ModelFileError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// Checks the model file before llama.cpp sees it: exists, is GGUF, matches the expected SHA-256.
pub fn verify_model_file(path: &Path, sha256: &str) -> Result<(), ModelFileError> {
    let err = |problem: String| ModelFileError {
        path: path.display().to_string(),
        problem,
    };
    let mut f = std::fs::File::open(path).map_err(|e| err(format!("cannot be opened ({e})")))?;
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic)
        .map_err(|_| err("is too short to be a GGUF file".into()))?;
    if &magic != b"GGUF" {
        return Err(err("is not a GGUF file (bad magic)".into()));
    }
    if !sha256.is_empty() {
        let got = file_sha256(path).map_err(|e| err(format!("cannot be read ({e})")))?;
        if !got.eq_ignore_ascii_case(sha256) {
            return Err(err(format!("is corrupt: SHA-256 {got}, expected {sha256}")));
        }
    }
    Ok(())
}

/// The SHA-256 of a file's contents, lower-case hex.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(format!("{:x}", h.finalize()))
}

/// The SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(bytes))
}
