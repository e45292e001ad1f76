//! The settings a life switches for its duration: written into settings.toml (toml_edit, comments kept, under
//! the file lock) so they survive a restart like any setting, and put back exactly at the end. The daemon's
//! own reload makes them live; the life waits until it has.

use std::path::Path;

use batos_protocol::life::Switch;

use crate::settings::{LifeSettings, Settings};

/// The switches of a life that ablates `ablate` (or none): the trainer's smaller step budget, the Curator's
/// lower trigger and larger held-out share (a life is short), and the ablated loop's off switch.
pub fn plan(life: &LifeSettings, ablate: Option<&str>) -> Vec<(String, String)> {
    let mut out = vec![
        ("trainer.steps".to_string(), life.trainer_steps.to_string()),
        (
            "curator.min_new_examples".to_string(),
            life.min_new_examples.to_string(),
        ),
        (
            "curator.heldout_percent".to_string(),
            life.heldout_percent.to_string(),
        ),
    ];
    let off = match ablate {
        Some("memory") => Some(("memory.active", "false")),
        Some("tools") => Some(("tools.forge_active", "false")),
        Some("trainer") => Some(("trainer.auto_train", "false")),
        Some("motivator") => Some(("motivator.paused", "true")),
        _ => None,
    };
    if let Some((k, v)) = off {
        out.push((k.to_string(), v.to_string()));
    }
    out
}

/// The switches of `plan` with the values the settings file holds now (what the end puts back), read without
/// writing: the life records them before it writes anything, so a kill between the two never loses them.
pub fn prepare(path: &Path, plan: &[(String, String)]) -> Result<Vec<Switch>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(plan
        .iter()
        .map(|(key, during)| {
            let mut item = Some(doc.as_item());
            for k in key.split('.') {
                item = item.and_then(|i| i.get(k));
            }
            let before = item.and_then(|i| i.as_value()).map(|v| {
                let mut bare = v.clone();
                bare.decor_mut().clear();
                bare.to_string()
            });
            Switch {
                key: key.clone(),
                before,
                during: during.clone(),
            }
        })
        .collect())
}

/// Writes every switch's value for the life (again after a restart: the same values, so it is idempotent).
pub fn apply(path: &Path, switched: &[Switch]) -> Result<(), String> {
    let edits: Vec<(String, Option<String>)> = switched
        .iter()
        .map(|s| (s.key.clone(), Some(s.during.clone())))
        .collect();
    crate::settings::edit_values(path, &edits)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Puts every switched value back (a key the file did not hold is removed again).
pub fn restore(path: &Path, switched: &[Switch]) -> Result<(), String> {
    let edits: Vec<(String, Option<String>)> = switched
        .iter()
        .map(|s| (s.key.clone(), s.before.clone()))
        .collect();
    crate::settings::edit_values(path, &edits)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether the live settings hold every switch's value (the reload has happened).
pub fn in_force(s: &Settings, switched: &[Switch]) -> bool {
    let Ok(v) = toml_edit::ser::to_string(s).map(|t| t.parse::<toml_edit::DocumentMut>()) else {
        return false;
    };
    let Ok(doc) = v else {
        return false;
    };
    switched.iter().all(|sw| {
        let mut item = doc.as_item();
        for k in sw.key.split('.') {
            match item.get(k) {
                Some(i) => item = i,
                None => return false,
            }
        }
        item.as_value().is_some_and(|v| {
            let mut bare = v.clone();
            bare.decor_mut().clear();
            bare.to_string() == sw.during
        })
    })
}
