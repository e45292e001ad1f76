//! Exact and near-duplicate detection over one persona's kept examples (training and held-out together).
//!
//! Exact: SHA-256 of the normalised text (lower case, letters and digits only, single spaces). The same hash
//! names the example in its lineage and picks its split, so both are stable across restarts.
//!
//! Near: MinHash over word shingles with LSH banding (Broder; Leskovec, Rajaraman & Ullman ch. 3). A
//! signature is `hashes` minima of as many hash functions; two texts agree on one entry with probability
//! equal to their Jaccard similarity. The signature is cut into `bands` bands; texts that agree on a whole
//! band become candidates, and only candidates are compared, so a check costs a few hash-map probes plus
//! one signature comparison per candidate instead of a pass over every stored example.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

// The loops (normalising, shingling, signatures, band keys) are in the kernels crate, compiled at opt-level 3
// in the dev profile too: an index is rebuilt from every kept example at start.
use batos_kernels::minhash;
pub use batos_kernels::minhash::normalise;

/// SHA-256 of the normalised text, as 64 lowercase hex chars.
pub fn content_hash(normalised: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(normalised.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// A stable bucket in `0..100` from a content hash (its first 8 hex digits), for the train/held-out split.
pub fn percentile(hash: &str) -> u8 {
    let head = hash.get(..8).unwrap_or("0");
    (u32::from_str_radix(head, 16).unwrap_or(0) % 100) as u8
}

/// splitmix64: the fixed sequence the hash functions' coefficients come from.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The shape of the near-duplicate check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NearParams {
    /// Words per shingle (≥ 1).
    pub shingle_words: usize,
    /// Signature length, a multiple of `bands`.
    pub hashes: usize,
    /// LSH bands.
    pub bands: usize,
    /// Estimated Jaccard similarity at or above which two texts are near duplicates.
    pub threshold: f64,
}

/// What a check found.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Nothing like it is kept.
    New,
    /// The same normalised text is kept under this key.
    Exact(String),
    /// A text this similar (estimated Jaccard) is kept under this key.
    Near(String, f64),
}

/// A prepared text: its hash and signature, computed once and used for both the check and the insert.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// SHA-256 of the normalised text.
    pub hash: String,
    sig: Vec<u32>,
}

/// The index of one persona's kept examples.
#[derive(Debug)]
pub struct DedupeIndex {
    params: NearParams,
    coeffs: Vec<(u64, u64)>,
    exact: HashMap<String, String>,
    sigs: Vec<(String, Vec<u32>)>,
    bands: HashMap<(usize, u64), Vec<u32>>,
}

impl DedupeIndex {
    /// An empty index. `params` must be valid (settings validation ensures it: `hashes % bands == 0`).
    pub fn new(params: NearParams) -> Self {
        let mut state = 0x5eed_u64;
        let coeffs = (0..params.hashes.max(1))
            .map(|_| (splitmix(&mut state) | 1, splitmix(&mut state)))
            .collect();
        Self {
            params,
            coeffs,
            exact: HashMap::new(),
            sigs: Vec::new(),
            bands: HashMap::new(),
        }
    }

    /// Examples indexed.
    pub fn len(&self) -> usize {
        self.sigs.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.sigs.is_empty()
    }

    /// Hash and signature of a text (normalised here).
    pub fn prepare(&self, text: &str) -> Prepared {
        let norm = normalise(text);
        let hash = content_hash(&norm);
        let sig = minhash::signature(
            &minhash::shingles(&norm, self.params.shingle_words),
            &self.coeffs,
        );
        Prepared { hash, sig }
    }

    fn band_keys(&self, sig: &[u32]) -> Vec<(usize, u64)> {
        minhash::band_keys(sig, self.params.bands)
    }

    /// Whether `p` duplicates a kept example, exactly or nearly.
    pub fn check(&self, p: &Prepared) -> Verdict {
        if let Some(key) = self.exact.get(&p.hash) {
            return Verdict::Exact(key.clone());
        }
        let mut seen: HashSet<u32> = HashSet::new();
        let mut best: Option<(u32, f64)> = None;
        for bk in self.band_keys(&p.sig) {
            for &idx in self.bands.get(&bk).into_iter().flatten() {
                if !seen.insert(idx) {
                    continue;
                }
                let (_, other) = &self.sigs[idx as usize];
                let same = minhash::agreement(other, &p.sig);
                let j = same as f64 / p.sig.len().max(1) as f64;
                if best.is_none_or(|(_, b)| j > b) {
                    best = Some((idx, j));
                }
            }
        }
        match best {
            Some((idx, j)) if j >= self.params.threshold => {
                Verdict::Near(self.sigs[idx as usize].0.clone(), j)
            }
            _ => Verdict::New,
        }
    }

    /// Adds a kept example under `key`.
    pub fn insert(&mut self, key: &str, p: Prepared) {
        let idx = self.sigs.len() as u32;
        for bk in self.band_keys(&p.sig) {
            self.bands.entry(bk).or_default().push(idx);
        }
        self.exact.insert(p.hash, key.to_string());
        self.sigs.push((key.to_string(), p.sig));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> NearParams {
        NearParams {
            shingle_words: 3,
            hashes: 64,
            bands: 16,
            threshold: 0.7,
        }
    }

    #[test]
    fn normalising_ignores_case_punctuation_and_spacing() {
        assert_eq!(normalise("  Hello,   WORLD!\n 42 "), "hello world 42");
        assert_eq!(
            content_hash(&normalise("Hello world")),
            content_hash(&normalise("hello -- WORLD."))
        );
        assert!(percentile(&content_hash("x")) < 100);
    }

    #[test]
    fn the_content_hash_is_sha256_in_lowercase_hex() {
        // The published digests of "" and "abc": the hash names examples in their lineage files and picks their
        // split, so its spelling must not change.
        assert_eq!(
            content_hash(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            content_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            percentile(&content_hash("abc")),
            (0xba78_16bfu32 % 100) as u8
        );
    }

    #[test]
    fn exact_and_near_duplicates_are_found_and_different_texts_are_not() {
        let mut ix = DedupeIndex::new(params());
        let a = "Moths fly to lanterns because they steer by keeping a distant light at a fixed angle, \
                 and a near lamp bends that course into a spiral around it.";
        ix.insert("a", ix.prepare(a));
        assert_eq!(
            ix.check(&ix.prepare(&a.to_uppercase())),
            Verdict::Exact("a".into())
        );
        let near = "Moths fly to lanterns because they steer by keeping a distant light at a fixed angle, \
                    and a near lamp bends that course into a spiral around it!! Indeed.";
        match ix.check(&ix.prepare(near)) {
            Verdict::Near(k, j) => assert!(k == "a" && j >= 0.7, "{j}"),
            other => panic!("expected a near duplicate, got {other:?}"),
        }
        let other =
            "Bread rises because yeast eats sugar and breathes out carbon dioxide, which the \
                     gluten network traps as bubbles while the dough proves in a warm kitchen.";
        assert_eq!(ix.check(&ix.prepare(other)), Verdict::New);
        assert_eq!(ix.len(), 1);
    }
}
