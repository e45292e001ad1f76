//! Changing the settings file in place: `toml_edit` keeps comments and layout, an exclusive file lock
//! serialises writers (and readers that take it through [`with_settings_lock`]), and the write is atomic.

use std::path::Path;

use super::{Settings, SettingsError};

/// Sets one string value in a settings file in place, keeping comments and layout (`toml_edit`), under an
/// exclusive file lock and with an atomic write. `keys` is the path, e.g. `["personas", "BRICK", "model"]`.
pub fn set_string_value(path: &Path, keys: &[&str], value: &str) -> Result<(), SettingsError> {
    set_string_value_then(path, keys, value, || ())
}

/// [`set_string_value`], then `then` while the file lock is still held, so that a reader taking the same lock
/// ([`with_settings_lock`]) sees the file and whatever `then` updates in one consistent state.
pub fn set_string_value_then(
    path: &Path,
    keys: &[&str],
    value: &str,
    then: impl FnOnce(),
) -> Result<(), SettingsError> {
    let quoted = toml_edit::Value::from(value).to_string();
    edit_doc(
        path,
        |doc| set_in(path, doc, keys, Some(quoted.trim())).map(|_| ()),
        then,
    )
}

/// Sets (or, with `None`, removes) several values of a settings file in one write, keeping comments and
/// layout, under the file lock, atomically; a result the daemon could not read back is refused and nothing
/// is written. Each edit is a dotted key (`memory.active`) and a TOML value (`false`, `20`, `"x"`). Answers
/// each key's value before, as TOML (`None`: it was not in the file).
pub fn edit_values(
    path: &Path,
    edits: &[(String, Option<String>)],
) -> Result<Vec<Option<String>>, SettingsError> {
    edit_doc(
        path,
        |doc| {
            edits
                .iter()
                .map(|(key, value)| {
                    let keys: Vec<&str> = key.split('.').collect();
                    set_in(path, doc, &keys, value.as_deref())
                })
                .collect()
        },
        || (),
    )
}

/// Sets (or removes) the value at `keys` in `doc`, keeping its key's comment and its own decoration; answers
/// the value it replaced, as TOML.
fn set_in(
    path: &Path,
    doc: &mut toml_edit::DocumentMut,
    keys: &[&str],
    value: Option<&str>,
) -> Result<Option<String>, SettingsError> {
    let invalid = |message: String| SettingsError::Invalid {
        path: path.to_path_buf(),
        key: keys.join("."),
        message,
    };
    let Some((last, parents)) = keys.split_last() else {
        return Err(invalid("empty key path".into()));
    };
    // A file that still has a renamed table under its old name is edited there.
    let renamed = parents.first().and_then(|first| {
        super::RENAMED_TABLES
            .iter()
            .find(|(new, old)| new == first && !doc.contains_key(new) && doc.contains_key(old))
            .map(|(_, old)| *old)
    });
    let mut table = doc.as_table_mut() as &mut dyn toml_edit::TableLike;
    for (i, k) in parents.iter().enumerate() {
        let k = match renamed {
            Some(old) if i == 0 => old,
            _ => *k,
        };
        // A missing table is made (implicit: no header of its own unless it holds values).
        let mut fresh = toml_edit::Table::new();
        fresh.set_implicit(true);
        table = table
            .entry(k)
            .or_insert(toml_edit::Item::Table(fresh))
            .as_table_like_mut()
            .ok_or_else(|| invalid(format!("`{k}` is not a table")))?;
    }
    let before = table.get(last).and_then(|i| i.as_value()).map(|v| {
        let mut bare = v.clone();
        bare.decor_mut().clear();
        bare.to_string()
    });
    match value {
        None => {
            table.remove(last);
        }
        Some(v) => {
            let mut new: toml_edit::Value = v
                .parse()
                .map_err(|e| invalid(format!("`{v}` is not a TOML value: {e}")))?;
            // Replaced in place: the comment above a key belongs to the key, beside it to the value.
            match table.get_mut(last).and_then(|i| i.as_value_mut()) {
                Some(slot) => {
                    *new.decor_mut() = slot.decor().clone();
                    *slot = new;
                }
                None => {
                    table.insert(last, toml_edit::Item::Value(new));
                }
            }
        }
    }
    Ok(before)
}

/// Reads the settings file under its exclusive lock, applies `f`, writes the result atomically when it changed
/// and the daemon could read it back (else nothing is written and `then` does not run), then runs `then` while
/// the lock is still held.
fn edit_doc<T>(
    path: &Path,
    f: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<T, SettingsError>,
    then: impl FnOnce(),
) -> Result<T, SettingsError> {
    let write_err = |source| SettingsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let lock = crate::fsutil::lock_file_for(path).map_err(write_err)?;
    lock.lock().map_err(write_err)?;
    let result = (|| {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut doc: toml_edit::DocumentMut =
            text.parse()
                .map_err(|e: toml_edit::TomlError| SettingsError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
        let out = f(&mut doc)?;
        let new = doc.to_string();
        if new != text {
            // Never write a file the daemon could not read back.
            Settings::parse(&new, path)?;
            crate::fsutil::atomic_write(path, new.as_bytes()).map_err(write_err)?;
        }
        then();
        Ok(out)
    })();
    let _ = lock.unlock();
    result
}

/// Runs `f` holding the settings file's exclusive lock (the one [`set_string_value`] takes).
pub fn with_settings_lock<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T, SettingsError> {
    let write_err = |source| SettingsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let lock = crate::fsutil::lock_file_for(path).map_err(write_err)?;
    lock.lock().map_err(write_err)?;
    let out = f();
    let _ = lock.unlock();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::shipped;

    #[test]
    fn set_string_value_keeps_comments() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("settings.toml");
        std::fs::write(&p, shipped()).unwrap();
        set_string_value(&p, &["personas", "BRICK", "model"], "brick:v2").unwrap();
        let after = std::fs::read_to_string(&p).unwrap();
        assert!(after.contains("# The model each persona thinks with."));
        let s = Settings::parse(&after, &p).unwrap();
        assert_eq!(s.personas["BRICK"].model, "brick:v2");
        assert_eq!(s.personas["ALFRED"].model, "smollm2:135m");
    }

    #[test]
    fn a_file_with_the_trainers_old_table_loads_and_is_edited_there() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("settings.toml");
        let old = shipped().replace("\n[trainer]\n", "\n[forge]\n");
        assert_ne!(old, shipped());
        std::fs::write(&p, &old).unwrap();
        let s = Settings::parse(&old, &p).unwrap();
        assert_eq!(s.trainer.steps, 40, "[forge] is read as [trainer]");
        assert_eq!(
            crate::settings::deprecations(&old),
            vec![
                "[forge] is now [trainer]; the old name is read for one release: rename the table"
            ]
        );
        assert!(crate::settings::deprecations(&shipped()).is_empty());
        // An edit by the new name lands in the old table: no second table, the file still loads.
        edit_values(&p, &[("trainer.steps".into(), Some("7".into()))]).unwrap();
        let after = std::fs::read_to_string(&p).unwrap();
        assert!(!after.contains("[trainer]"), "{after}");
        assert_eq!(Settings::parse(&after, &p).unwrap().trainer.steps, 7);
        // Both tables at once is refused, naming the old one.
        let both = format!("{}\n[forge]\nsteps = 3\n", shipped());
        let e = Settings::parse(&both, &p).unwrap_err().to_string();
        assert!(
            e.contains("both [forge]") && e.contains("keep [trainer]"),
            "{e}"
        );
    }

    #[test]
    fn several_values_are_switched_in_one_write_and_put_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("settings.toml");
        std::fs::write(&p, shipped()).unwrap();
        let edits = vec![
            ("memory.active".to_string(), Some("false".to_string())),
            ("trainer.steps".to_string(), Some("7".to_string())),
        ];
        let before = edit_values(&p, &edits).unwrap();
        assert_eq!(before, vec![Some("true".into()), Some("40".into())]);
        let s = Settings::parse(&std::fs::read_to_string(&p).unwrap(), &p).unwrap();
        assert!(!s.memory.active);
        assert_eq!(s.trainer.steps, 7);
        let back: Vec<(String, Option<String>)> = edits
            .iter()
            .zip(before)
            .map(|((k, _), b)| (k.clone(), b))
            .collect();
        edit_values(&p, &back).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            shipped(),
            "byte for byte"
        );
        let bad = edit_values(&p, &[("trainer.steps".into(), Some("0".into()))]);
        assert!(bad.is_err(), "a value the daemon refuses is not written");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), shipped());
    }
}
