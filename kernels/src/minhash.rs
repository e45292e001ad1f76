//! The Curator's near-duplicate loops (`batos_actors::curator::dedupe`): text normalisation, word-shingle
//! hashing, MinHash signatures, LSH band keys and signature agreement.
//!
//! They run for every exchange the Curator screens and for every kept example when a persona's index is
//! rebuilt from its files at start (100k examples), so they sit here, at opt-level 3 in the dev profile, where
//! at opt-level 0 the iterator chains of one signature (a minimum over every shingle for each of 64 hash
//! functions) cost ~8× more. The results are the same as before the move, bit for bit: the keys and the
//! coefficients are fixed, and `dedupe`'s tests pin the verdicts.

use std::collections::HashSet;

/// Lower case, letters and digits only, words separated by single spaces.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

/// FNV-1a, 64 bits: a fast, fixed hash of one shingle (signatures are rebuilt from the files at every start, so
/// only speed and spread matter here, not stability across versions).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The distinct hashes of a normalised text's shingles of `k ≥ 1` words (words joined by one space); a text of
/// at most `k` words is one shingle, the whole text.
pub fn shingles(normalised: &str, k: usize) -> HashSet<u64> {
    let words: Vec<&str> = normalised.split(' ').filter(|w| !w.is_empty()).collect();
    let k = k.max(1);
    let mut out = HashSet::new();
    if words.len() <= k {
        out.insert(fnv1a(normalised.as_bytes()));
    } else {
        let mut joined = String::new();
        for w in words.windows(k) {
            joined.clear();
            for (i, word) in w.iter().enumerate() {
                if i > 0 {
                    joined.push(' ');
                }
                joined.push_str(word);
            }
            out.insert(fnv1a(joined.as_bytes()));
        }
    }
    out
}

/// The MinHash signature: for each hash function `x ↦ (a·x + b) mod 2⁶⁴`, the least top 32 bits over the
/// shingles (`u32::MAX` for none).
pub fn signature(shingles: &HashSet<u64>, coeffs: &[(u64, u64)]) -> Vec<u32> {
    let xs: Vec<u64> = shingles.iter().copied().collect();
    coeffs
        .iter()
        .map(|&(a, b)| {
            xs.iter()
                .map(|&x| (a.wrapping_mul(x).wrapping_add(b) >> 32) as u32)
                .min()
                .unwrap_or(u32::MAX)
        })
        .collect()
}

/// The LSH key of each band of `bands` equal bands (`(band, FNV-1a of its values' little-endian bytes)`).
pub fn band_keys(sig: &[u32], bands: usize) -> Vec<(usize, u64)> {
    let rows = (sig.len() / bands.max(1)).max(1);
    let mut bytes = Vec::with_capacity(rows * 4);
    sig.chunks(rows)
        .enumerate()
        .map(|(i, band)| {
            bytes.clear();
            for v in band {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            (i, fnv1a(&bytes))
        })
        .collect()
}

/// Entries where two signatures agree (the estimated Jaccard similarity is this over their length).
pub fn agreement(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_its_published_values() {
        // The FNV-1a 64 test vectors (the offset basis for "", and "a").
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn shingles_are_the_hashes_of_k_word_windows_and_a_short_text_is_one() {
        let s = shingles("a b c d", 3);
        let want: HashSet<u64> = [fnv1a(b"a b c"), fnv1a(b"b c d")].into();
        assert_eq!(s, want);
        assert_eq!(shingles("a b", 3), [fnv1a(b"a b")].into());
        assert_eq!(shingles("a a a a a", 2), [fnv1a(b"a a")].into());
    }

    #[test]
    fn a_signature_holds_each_functions_minimum_and_bands_agree_where_signatures_do() {
        let xs: HashSet<u64> = [3, 1 << 40, 7].into();
        let coeffs = [(5u64, 9u64), (1 << 33, 0)];
        let sig = signature(&xs, &coeffs);
        for (i, &(a, b)) in coeffs.iter().enumerate() {
            let min = xs
                .iter()
                .map(|&x| (a.wrapping_mul(x).wrapping_add(b) >> 32) as u32)
                .min();
            assert_eq!(Some(sig[i]), min);
        }
        assert_eq!(signature(&HashSet::new(), &coeffs), vec![u32::MAX; 2]);
        let (p, q) = ([1, 2, 3, 4], [1, 2, 3, 5]);
        let (kp, kq) = (band_keys(&p, 2), band_keys(&q, 2));
        assert_eq!(kp[0], kq[0]);
        assert_ne!(kp[1], kq[1]);
        assert_eq!(agreement(&p, &q), 3);
    }
}
