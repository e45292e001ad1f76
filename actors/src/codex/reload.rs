//! Live settings: which changed keys take effect at once, and which need a restart.

use serde_json::Value;

use crate::settings::Settings;

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
    "supervision",
    "llm.backend",
    "llm.ollama_url",
    "llm.probe_timeout_ms",
    "llm.request_timeout_ms",
    "llm.embedded",
    "orchestrator.max_concurrent_tasks",
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

fn is_restart_only(key: &str) -> bool {
    RESTART_ONLY
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
