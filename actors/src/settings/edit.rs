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
    let write_err = |source| SettingsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let lock = crate::fsutil::lock_file_for(path).map_err(write_err)?;
    // std's advisory flock (stable since Rust 1.89) replaces fs4 here.
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
        let (last, parents) = keys.split_last().ok_or_else(|| SettingsError::Invalid {
            path: path.to_path_buf(),
            key: String::new(),
            message: "empty key path".into(),
        })?;
        let mut item = doc.as_item_mut();
        for k in parents {
            item = &mut item[*k];
        }
        // Keep the existing value's decoration (trailing comment) when replacing it.
        let decor = item
            .get(*last)
            .and_then(|i| i.as_value())
            .map(|v| v.decor().clone());
        let mut new_value = toml_edit::Value::from(value);
        if let Some(decor) = decor {
            *new_value.decor_mut() = decor;
        }
        item[*last] = toml_edit::Item::Value(new_value);
        let out = doc.to_string();
        if out != text {
            // Never write a file the daemon could not read back.
            Settings::parse(&out, path)?;
            crate::fsutil::atomic_write(path, out.as_bytes()).map_err(write_err)?;
        }
        then();
        Ok(())
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
}
