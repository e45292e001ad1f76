//! `config/settings.toml`: every tunable of the daemon, typed and validated.
//!
//! Every key is required (the shipped file is the single source of truth, so the code holds no second copy of
//! the defaults); unknown keys are refused so a typo cannot silently fall back to anything. Relative paths
//! resolve from the folder that holds the file.
//!
//! The module is split by job:
//!
//! - this file: [`SettingsError`], [`LoadedSettings`] and loading ([`Settings::parse`]: parse, make paths
//!   absolute, validate);
//! - `schema`: the serde structs, [`Settings`] and one struct or enum per section of the file;
//! - `sampling`: [`Sampling`], the one sampling type, and [`SamplingOverrides`];
//! - `validate`: the range and consistency checks run on every parse (so also before every write);
//! - `edit`: changing one value in place ([`set_string_value`], [`set_string_value_then`]) under the file
//!   lock that [`with_settings_lock`] also takes.

mod cluster;
mod edit;
mod exam;
mod goals;
mod http;
mod life;
mod orchestrator;
mod sampling;
mod schema;
mod trainer;
mod validate;

pub use cluster::{ClusterSettings, WhenNoNode, ROLES as CLUSTER_ROLES};
pub use exam::ExamSettings;
pub use http::HttpSettings;
pub use life::LifeSettings;
pub use orchestrator::{OrchestratorSettings, RouteMode};
pub use sampling::{Sampling, SamplingOverrides};
pub use validate::tcp_endpoint;

use std::path::{Path, PathBuf};

pub use edit::{edit_values, set_string_value, set_string_value_then, with_settings_lock};
pub use schema::{
    BackendChoice, ClientSettings, CodexSettings, CuratorSettings, CurveMode, DebugSettings,
    EmbeddedSettings, GatewaySettings, LlmSettings, LogFormat, LogSettings, MemorySettings,
    MotivatorSettings, PersonaSettings, SandboxChoice, ServeWeights, Settings, SupervisionSettings,
    ToolsSettings, TrainerSettings, TriggerPriorities, DEFAULT_LOG_FIELD_CHARS,
};

/// Why settings could not be loaded or changed.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read settings file {path}: {source}")]
    Read {
        /// The file tried.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (the message names the key).
    #[error("invalid settings file {path}: {message}")]
    Parse {
        /// The file tried.
        path: PathBuf,
        /// The parser's message, naming line, column and key.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting `{key}` in {path}: {message}")]
    Invalid {
        /// The file tried.
        path: PathBuf,
        /// Dotted key, e.g. `gateway.heartbeat_ms`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Writing the file back failed.
    #[error("cannot write settings file {path}: {source}")]
    Write {
        /// The file tried.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Settings plus where they came from.
#[derive(Debug, Clone)]
pub struct LoadedSettings {
    /// The parsed settings, with every path made absolute.
    pub settings: Settings,
    /// The file they were read from (absolute).
    pub path: PathBuf,
}

impl LoadedSettings {
    /// Reads, parses, resolves and validates the settings file.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let path = std::path::absolute(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let settings = Settings::parse(&text, &path)?;
        Ok(Self { settings, path })
    }

    /// The folder holding the settings file; relative paths resolve from here.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }
}

/// Tables renamed, `(new, old)`: a file written before the rename is read with its old table for one release
/// ([`deprecations`] names it, boot logs it), and an edit of the new name goes into the old table while the
/// file has only that one (a second table would make the file unreadable). The trainer's table was `[forge]`
/// before issue 29, when "forge" named both the ToolForge and the trainer.
pub const RENAMED_TABLES: &[(&str, &str)] = &[("trainer", "forge")];

/// Keys retired, `(table, key, what replaced them)`: a file that still sets one is read past it for one release
/// ([`deprecations`] names it, boot logs it) instead of being refused as unknown. The persona-call retry count
/// and its restart wait gave way to one outwait (issue 32: a task outwaits its persona's restarts).
pub const RETIRED_KEYS: &[(&str, &str, &str)] = &[
    (
        "orchestrator",
        "persona_retries",
        "a lost persona call is retried until orchestrator.persona_outwait_ms has passed",
    ),
    (
        "orchestrator",
        "persona_restart_wait_ms",
        "the wait for a persona's restart is bounded by orchestrator.persona_outwait_ms",
    ),
];

/// What in settings text goes by an old name or is retired (one line each, saying what replaced it); empty for
/// a current file.
pub fn deprecations(text: &str) -> Vec<String> {
    let Ok(doc) = text.parse::<toml_edit::DocumentMut>() else {
        return Vec::new();
    };
    let renamed = RENAMED_TABLES
        .iter()
        .filter(|(_, old)| doc.contains_key(old))
        .map(|(new, old)| {
            format!(
                "[{old}] is now [{new}]; the old name is read for one release: rename the table"
            )
        });
    let retired = RETIRED_KEYS
        .iter()
        .filter(|(table, key, _)| retired_in(&doc, table, key))
        .map(|(table, key, instead)| {
            format!("{table}.{key} is retired and ignored for one release ({instead}): remove it")
        });
    renamed.chain(retired).collect()
}

/// Whether `doc` sets the retired `table.key`.
fn retired_in(doc: &toml_edit::DocumentMut, table: &str, key: &str) -> bool {
    doc.get(table)
        .and_then(|t| t.as_table_like())
        .is_some_and(|t| t.contains_key(key))
}

impl Settings {
    /// Parses settings text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SettingsError> {
        if let Ok(doc) = text.parse::<toml_edit::DocumentMut>() {
            if let Some((new, old)) = RENAMED_TABLES
                .iter()
                .find(|(new, old)| doc.contains_key(new) && doc.contains_key(old))
            {
                return Err(SettingsError::Invalid {
                    path: path.to_path_buf(),
                    key: (*old).to_string(),
                    message: format!(
                        "both [{old}] (its old name) and [{new}] are present: keep [{new}]"
                    ),
                });
            }
        }
        // Retired keys are read past (and named by `deprecations`), not refused as unknown.
        let current;
        let text = match text.parse::<toml_edit::DocumentMut>() {
            Ok(mut doc)
                if RETIRED_KEYS
                    .iter()
                    .any(|(table, key, _)| retired_in(&doc, table, key)) =>
            {
                for (table, key, _) in RETIRED_KEYS {
                    if let Some(t) = doc.get_mut(table).and_then(|t| t.as_table_like_mut()) {
                        t.remove(key);
                    }
                }
                current = doc.to_string();
                current.as_str()
            }
            _ => text,
        };
        let mut s: Settings = toml_edit::de::from_str(text).map_err(|e| SettingsError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let dir = path.parent().unwrap_or(Path::new("/"));
        s.data_dir = resolve(dir, &s.data_dir);
        s.codex_path = resolve(dir, &s.codex_path);
        s.llm.embedded.model_path = resolve(dir, &s.llm.embedded.model_path);
        s.tools.rootfs = resolve(dir, &s.tools.rootfs);
        s.tools.state_dir = resolve(dir, &s.tools.state_dir);
        s.trainer.general_set = resolve(dir, &s.trainer.general_set);
        for p in [
            &mut s.cluster.cookie_file,
            &mut s.cluster.tls_cert,
            &mut s.cluster.tls_key,
            &mut s.cluster.tls_ca,
        ] {
            if !p.as_os_str().is_empty() {
                *p = resolve(dir, p);
            }
        }
        if !s.trainer.exam_gate.as_os_str().is_empty() {
            s.trainer.exam_gate = resolve(dir, &s.trainer.exam_gate);
        }
        s.validate(path)?;
        Ok(s)
    }
}

fn resolve(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// The shipped `config/settings.toml`, for the unit tests of this module and its sub-files.
#[cfg(test)]
fn shipped() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/settings.toml"
    ))
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_settings_parse() {
        let s = Settings::parse(&shipped(), Path::new("/x/config/settings.toml")).unwrap();
        assert_eq!(s.gateway.heartbeat_ms, 1000);
        assert_eq!(s.data_dir, Path::new("/x/config/../data"));
        assert_eq!(s.personas.len(), 4);
    }

    #[test]
    fn a_retired_key_is_read_past_and_named_not_refused() {
        let old = shipped().replace(
            "persona_outwait_ms = 60000",
            "persona_outwait_ms = 60000\npersona_retries = 2\npersona_restart_wait_ms = 10000",
        );
        assert_ne!(old, shipped(), "the shipped file sets persona_outwait_ms");
        let s = Settings::parse(&old, Path::new("/x/config/settings.toml")).unwrap();
        assert_eq!(s.orchestrator.persona_outwait_ms, 60000);
        let notes = deprecations(&old);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].contains("orchestrator.persona_retries"),
            "{notes:?}"
        );
        // Any other unknown key is still refused.
        let wrong = shipped().replace(
            "persona_outwait_ms = 60000",
            "persona_outwait_ms = 60000\npersona_retrys = 2",
        );
        assert!(Settings::parse(&wrong, Path::new("/x/config/settings.toml")).is_err());
    }

    #[test]
    fn unknown_key_is_refused_and_named() {
        let text = shipped().replace(
            "heartbeat_ms = 1000",
            "heartbeat_ms = 1000\nheartbeat_msec = 3",
        );
        let e = Settings::parse(&text, Path::new("/x/s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("heartbeat_msec"), "{e}");
    }

    #[test]
    fn an_embedded_table_from_before_the_batched_decoder_still_loads_as_it_behaved() {
        let mut text = shipped();
        let start = text.find("parallel = 4").unwrap();
        let end = text.find("batch_invariant = false").unwrap() + "batch_invariant = false".len();
        text.replace_range(start..end, "max_contexts = 2");
        let s = Settings::parse(&text, Path::new("/x/config/settings.toml")).unwrap();
        let e = &s.llm.embedded;
        assert_eq!(e.parallel, 2, "max_contexts is read as parallel");
        assert!(!e.prefix_cache && !e.batch_invariant);
    }

    #[test]
    fn an_embedded_table_from_before_the_serving_copy_serves_the_file_as_it_is() {
        let text = shipped().replace("serve_weights = \"q8_0\"\n", "");
        assert_ne!(text, shipped());
        let s = Settings::parse(&text, Path::new("/x/config/settings.toml")).unwrap();
        assert_eq!(s.llm.embedded.serve_weights, ServeWeights::AsIs);
        let ours = Settings::parse(&shipped(), Path::new("/x/config/settings.toml")).unwrap();
        assert_eq!(ours.llm.embedded.serve_weights, ServeWeights::Q8_0);
        let bad = shipped().replace("serve_weights = \"q8_0\"", "serve_weights = \"q2\"");
        let e = Settings::parse(&bad, Path::new("/x/s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("serve_weights") || e.contains("q2"), "{e}");
    }

    #[test]
    fn a_memory_table_from_before_the_summary_tier_loads_with_the_tier_off() {
        let text = shipped().replace("summary_tier_mib = 32\n", "");
        assert_ne!(text, shipped());
        let s = Settings::parse(&text, Path::new("/x/config/settings.toml")).unwrap();
        assert_eq!(s.memory.summary_tier_mib, 0);
    }

    #[test]
    fn a_settings_file_from_before_the_families_loads_with_them_off() {
        assert_eq!(
            Settings::parse(&shipped(), Path::new("/x/config/settings.toml"))
                .unwrap()
                .memory
                .family_map_mib,
            16
        );
        let text = shipped().replace("family_map_mib = 16\n", "");
        assert_ne!(text, shipped());
        let s = Settings::parse(&text, Path::new("/x/config/settings.toml")).unwrap();
        assert_eq!(s.memory.family_map_mib, 0);
    }

    #[test]
    fn sampling_is_one_type_read_from_llm_and_overridden_per_persona() {
        let text = shipped().replace(
            "[personas.BRICK]\nmodel = \"smollm2:135m\"\n",
            "[personas.BRICK]\nmodel = \"smollm2:135m\"\ntemperature = 0.25\ntop_k = 7\n",
        );
        assert_ne!(text, shipped());
        let s = Settings::parse(&text, Path::new("/x/config/settings.toml")).unwrap();
        let brick = &s.personas["BRICK"].sampling;
        assert_eq!((brick.temperature, brick.top_k), (Some(0.25), Some(7)));
        let b = Sampling::for_persona(&s, "BRICK");
        assert_eq!((b.temperature, b.top_k, b.max_tokens), (0.25, 7, 192));
        assert_eq!(
            b.seed, s.llm.sampling.seed,
            "what BRICK does not set is [llm]'s"
        );
        assert_eq!(Sampling::for_persona(&s, "nobody"), s.llm.sampling);
        // Flattened into their tables, the sampling keys are still checked: a typo is refused and named.
        for (from, to) in [
            ("temperature = 0.25", "temprature = 0.25"),
            ("backend = \"auto\"", "backend = \"auto\"\ntop_q = 0.5"),
        ] {
            let bad = text.replacen(from, to, 1);
            assert_ne!(bad, text);
            let e = Settings::parse(&bad, Path::new("/x/s.toml"))
                .unwrap_err()
                .to_string();
            let key = to.rsplit('\n').next().unwrap().split(' ').next().unwrap();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn a_log_table_from_before_the_event_field_cut_loads_with_the_shipped_cut() {
        let text = shipped().replace("event_field_chars = 200\n", "");
        assert_ne!(text, shipped());
        let s = Settings::parse(&text, Path::new("/x/config/settings.toml")).unwrap();
        assert_eq!(s.log.event_field_chars, DEFAULT_LOG_FIELD_CHARS);
        let ours = Settings::parse(&shipped(), Path::new("/x/config/settings.toml")).unwrap();
        assert_eq!(ours.log.event_field_chars, DEFAULT_LOG_FIELD_CHARS);
    }
}
