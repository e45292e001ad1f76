//! Reloads: hand edits of codex.toml and settings.toml put in force (which changed keys take effect at once,
//! and which need a restart), and the swaps the daemon itself records in settings.toml.

use std::sync::Arc;

use ractor::ActorCell;
use serde_json::Value;

use super::actor::{set_model, CodexState};
use super::{Codex, CodexCmdError};
use crate::events::Event;
use crate::llm::SamplingTable;
use crate::settings::{LoadedSettings, Settings};

/// Keys (dotted prefixes) read only at start: a change is logged as needing a restart and not applied.
pub const RESTART_ONLY: &[&str] = &[
    "data_dir",
    "codex_path",
    "log.format",
    "gateway.command_endpoint",
    "gateway.event_endpoint",
    "gateway.heartbeat_ms",
    "gateway.event_queue_capacity",
    "gateway.max_inflight_commands",
    "gateway.dedupe_window_ms",
    "gateway.dedupe_capacity",
    "gateway.dedupe_max_bytes",
    "gateway.front_max_frame_bytes",
    "gateway.front_max_control_bytes",
    "gateway.front_max_frames",
    "gateway.handshake_timeout_ms",
    "gateway.max_connections",
    "gateway.max_pending_connections",
    "gateway.front_max_held_subscriptions",
    "gateway.view_keep_finished_tasks",
    "gateway.peer_ping_ms",
    "gateway.peer_timeout_ms",
    "gateway.curve",
    // Fault injection is a start-time decision: whoever can write settings.toml must not be able to turn it
    // on in a running daemon.
    "debug",
    "supervision",
    "llm.backend",
    "llm.ollama_url",
    "llm.probe_timeout_ms",
    "llm.request_timeout_ms",
    "llm.embedded",
    "orchestrator.max_concurrent_tasks",
    "motivator.enabled",
    "motivator.running_goals",
    "memory.table",
    "memory.consolidate_interval_ms",
    "tools",
];

/// What a settings reload changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconciled {
    /// The settings to put in force: the new file, with restart-only keys kept at their running values.
    pub effective: Settings,
    /// Changed keys now in force.
    pub live: Vec<String>,
    /// Changed keys that need a restart.
    pub restart: Vec<String>,
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, x, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

/// Keys under a restart-only prefix that are live all the same (their organ reads them at each use).
pub const LIVE_EXCEPTIONS: &[&str] = &["tools.forge_active"];

/// Whether a change of `key` (dotted) takes effect only after a restart.
pub fn is_restart_only(key: &str) -> bool {
    !LIVE_EXCEPTIONS.contains(&key)
        && RESTART_ONLY
            .iter()
            .any(|p| key == *p || key.starts_with(&format!("{p}.")))
}

fn set_path(root: &mut Value, key: &str, value: Value) {
    let mut cur = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            if let Value::Object(m) = cur {
                m.insert(p.to_string(), value);
            }
            return;
        }
        match cur {
            Value::Object(m) => {
                cur = m
                    .entry(p.to_string())
                    .or_insert(Value::Object(Default::default()))
            }
            _ => return,
        }
    }
}

/// Compares the running settings with a newly read file.
pub fn reconcile(running: &Settings, new: &Settings) -> Result<Reconciled, String> {
    let old_v = serde_json::to_value(running).map_err(|e| e.to_string())?;
    let mut new_v = serde_json::to_value(new).map_err(|e| e.to_string())?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flatten("", &old_v, &mut a);
    flatten("", &new_v, &mut b);
    let old: std::collections::BTreeMap<String, Value> = a.into_iter().collect();
    let newm: std::collections::BTreeMap<String, Value> = b.into_iter().collect();
    let mut keys: Vec<&String> = old.keys().chain(newm.keys()).collect();
    keys.sort();
    keys.dedup();
    let (mut live, mut restart) = (Vec::new(), Vec::new());
    for k in keys {
        if old.get(k) == newm.get(k) {
            continue;
        }
        if is_restart_only(k) {
            restart.push(k.clone());
            if let Some(v) = old.get(k) {
                set_path(&mut new_v, k, v.clone());
            }
        } else {
            live.push(k.clone());
        }
    }
    let effective: Settings = serde_json::from_value(new_v).map_err(|e| e.to_string())?;
    Ok(Reconciled {
        effective,
        live,
        restart,
    })
}

impl CodexState {
    /// Hand edit of codex.toml: parse, refuse if invalid (the last good codex stays), else install it.
    pub(super) fn reload_codex(&mut self) {
        let next = match Codex::load(&self.args.path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(event = "codex.reload_rejected", path = %self.args.path.display(), error = %e, "invalid codex edit refused; the last good codex stays in force");
                return;
            }
        };
        if next == *self.codex {
            return;
        }
        let mut changes = Vec::new();
        for (name, entry) in &next.personas {
            if self.codex.personas.get(name) != Some(entry) {
                changes.push(format!("personas.{name}"));
            }
        }
        tracing::info!(event = "codex.reloaded", changes = ?changes, "codex reloaded into the live personas");
        self.install(next);
        self.args.hub.publish(Event::ConfigReloaded {
            file: "codex".into(),
            changes,
        });
    }

    /// Writes `personas.<persona>.model = model` into settings.toml (comments kept) and into the live
    /// settings, under the settings file lock. Runs inside the mailbox, so no reload interleaves.
    pub(super) async fn record_model(
        &mut self,
        persona: String,
        model: String,
    ) -> Result<(), CodexCmdError> {
        let Some(path) = self.args.settings_path.clone() else {
            // No settings file (tests, benches): the live settings are the whole record.
            self.set_live_model(&persona, &model);
            return Ok(());
        };
        let live = self.args.live.clone();
        let (p, m) = (persona.clone(), model.clone());
        tokio::task::spawn_blocking(move || {
            crate::settings::set_string_value_then(&path, &["personas", &p, "model"], &m, || {
                set_model(&live, &p, &m)
            })
        })
        .await
        .map_err(|e| CodexCmdError::Write(e.to_string()))?
        .map_err(|e| CodexCmdError::Write(e.to_string()))
    }

    fn set_live_model(&self, persona: &str, model: &str) {
        set_model(&self.args.live, persona, model);
    }

    /// Hand edit of settings.toml: reconcile under the settings lock, put the live keys in force, log the
    /// restart-only ones, and apply sampling, model and log-level changes.
    pub(super) async fn reload_settings(&mut self, myself: &ActorCell) {
        let Some(path) = self.args.settings_path.clone() else {
            return;
        };
        // Read, compare and store under the lock the daemon's own writes (model swaps) take, so the file and the
        // live settings are compared in one consistent state.
        let live = self.args.live.clone();
        let outcome = crate::settings::with_settings_lock(&path, || {
            let new = LoadedSettings::load(&path)
                .map_err(|e| e.to_string())?
                .settings;
            let r = reconcile(&live.load_full(), &new)?;
            if !r.live.is_empty() {
                live.store(Arc::new(r.effective.clone()));
            }
            Ok::<_, String>(r)
        });
        let r = match outcome.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(event = "settings.reload_rejected", error = %e, "invalid settings edit refused; the running settings stay in force");
                return;
            }
        };
        if !r.restart.is_empty() {
            tracing::warn!(event = "settings.restart_needed", keys = ?r.restart, "these settings take effect only after a restart");
        }
        if r.live.is_empty() {
            return;
        }
        if r.live.iter().any(|k| k == "log.level") {
            if let Some(f) = &self.args.log_level {
                if let Err(e) = f(&r.effective.log.level) {
                    tracing::error!(event = "settings.log_level_rejected", error = %e, "log level unchanged");
                }
            }
        }
        if let Some(p) = &self.args.personas {
            if r.live.iter().any(|k| {
                k.starts_with("llm.") || (k.starts_with("personas.") && !k.ends_with(".model"))
            }) {
                p.set_sampling(SamplingTable::from_settings(&r.effective));
            }
            for key in r
                .live
                .iter()
                .filter(|k| k.starts_with("personas.") && k.ends_with(".model"))
            {
                let persona = key
                    .trim_start_matches("personas.")
                    .trim_end_matches(".model")
                    .to_string();
                let Some(model) = r.effective.personas.get(&persona).map(|s| s.model.clone())
                else {
                    continue;
                };
                let p = p.clone();
                // A changed model name is a cognitive atomic swap, with all its guarantees. As a job of the
                // codex (`root/codex/swap/<persona>`): the swap asks this very actor to record the model, so it
                // must not run in the mailbox.
                let label = format!("swap/{persona}");
                let swap = async move {
                    if p.current(&persona)
                        .map(|h| h.model == model)
                        .unwrap_or(false)
                    {
                        return;
                    }
                    if let Err(e) = p.swap_model(&persona, &model).await {
                        tracing::error!(event = "settings.swap_failed", persona = %persona, model = %model, error = %e, "model change from settings.toml not applied");
                    }
                };
                if let Err(e) = self.jobs.spawn(myself, label, swap).await {
                    tracing::error!(event = "settings.swap_failed", error = %e, "model change from settings.toml not applied: the swap could not start");
                }
            }
        }
        tracing::info!(event = "settings.reloaded", keys = ?r.live, "live settings updated");
        self.args.hub.publish(Event::ConfigReloaded {
            file: "settings".into(),
            changes: r.live,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Settings {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/settings.toml"
        ))
        .unwrap();
        Settings::parse(&text, std::path::Path::new("/x/config/settings.toml")).unwrap()
    }

    #[test]
    fn live_and_restart_keys_are_told_apart() {
        let old = shipped();
        let mut new = old.clone();
        new.orchestrator.dissonance_threshold = 0.5;
        new.gateway.heartbeat_ms = 50;
        new.personas.get_mut("BRICK").unwrap().model = "brick:2".into();
        let r = reconcile(&old, &new).unwrap();
        assert_eq!(
            r.live,
            vec!["orchestrator.dissonance_threshold", "personas.BRICK.model"]
        );
        assert_eq!(r.restart, vec!["gateway.heartbeat_ms"]);
        assert_eq!(r.effective.gateway.heartbeat_ms, old.gateway.heartbeat_ms);
        assert_eq!(r.effective.orchestrator.dissonance_threshold, 0.5);
        assert_eq!(reconcile(&old, &old).unwrap().live, Vec::<String>::new());
    }
}
