//! One persona's dataset as the Curator's decisions need it (kept keys, outcomes, the dedupe index), read back
//! from its files at start; and the trigger bookkeeping.

use super::*;

/// Per persona: the training-set size at its last trigger.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(super) struct TriggerState {
    pub(super) train_at_last: usize,
    pub(super) count: u64,
    pub(super) last_at: Option<f64>,
}

/// One persona's dataset, as far as decisions need it (the examples themselves stay on disk).
pub(super) struct PersonaSet {
    pub(super) dir: PathBuf,
    pub(super) index: DedupeIndex,
    /// Latest outcome per key: `accepted` or a reason code.
    pub(super) outcomes: HashMap<String, String>,
    /// Kept keys and their split.
    pub(super) kept: HashMap<String, Split>,
    /// Examples of refusals a human may overturn (and negatives), by key.
    pub(super) held: HashMap<String, Example>,
}

impl PersonaSet {
    pub(super) fn file(&self, split: Split) -> PathBuf {
        self.dir.join(format!("{}.jsonl", split.as_str()))
    }

    pub(super) fn decisions(&self) -> PathBuf {
        self.dir.join("decisions.jsonl")
    }

    pub(super) fn count(&self, split: Split) -> usize {
        self.kept.values().filter(|s| **s == split).count()
    }

    /// Reads the persona's files (cutting torn tails first). Kept examples win over a stale decision line:
    /// an example appended just before a crash counts as accepted.
    pub(super) fn load(dir: PathBuf, params: NearParams) -> std::io::Result<Self> {
        let mut set = PersonaSet {
            dir,
            index: DedupeIndex::new(params),
            outcomes: HashMap::new(),
            kept: HashMap::new(),
            held: HashMap::new(),
        };
        for split in [Split::Train, Split::Heldout] {
            repair(&set.file(split))?;
        }
        repair(&set.decisions())?;
        let (decisions, _) = read_lines::<Decision>(&set.decisions())?;
        for d in decisions {
            match d.example {
                Some(ex) if d.outcome != ACCEPTED => {
                    set.held.insert(d.key.clone(), ex);
                }
                _ => {
                    set.held.remove(&d.key);
                }
            }
            set.outcomes.insert(d.key, d.outcome);
        }
        for split in [Split::Train, Split::Heldout] {
            let (examples, _) = read_lines::<Example>(&set.file(split))?;
            for ex in examples {
                let key = ex.lineage.key.clone();
                set.index.insert(&key, set.index.prepare(&ex.dedupe_text()));
                set.outcomes.insert(key.clone(), ACCEPTED.into());
                set.held.remove(&key);
                set.kept.insert(key, split);
            }
        }
        Ok(set)
    }

    /// Rebuilds the dedupe index from the files (after examples were removed).
    pub(super) fn reindex(&mut self, params: NearParams) -> std::io::Result<()> {
        self.index = DedupeIndex::new(params);
        for split in [Split::Train, Split::Heldout] {
            let (examples, _) = read_lines::<Example>(&self.file(split))?;
            for ex in examples {
                self.index
                    .insert(&ex.lineage.key, self.index.prepare(&ex.dedupe_text()));
            }
        }
        Ok(())
    }
}

pub(super) fn params(s: &CuratorSettings) -> NearParams {
    NearParams {
        shingle_words: s.shingle_words,
        hashes: s.minhash_hashes,
        bands: s.lsh_bands,
        threshold: s.near_duplicate,
    }
}
