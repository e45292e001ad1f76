//! The cluster's shared secret: a private file every node reads, which a home creates on its first start.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::ClusterError;

/// Longest cookie accepted, in bytes.
const MAX_COOKIE: usize = 256;

/// Reads the cookie at `path`. Refused: a file others may read or write (any group or other permission
/// bit), an empty one, or one over 256 bytes.
pub fn read(path: &Path) -> Result<String, ClusterError> {
    let bad = |why: String| ClusterError::Cookie(format!("{}: {why}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "mode {mode:o} lets others read the cluster's secret: chmod 600 it"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let cookie = text.trim();
    if cookie.is_empty() || cookie.len() > MAX_COOKIE {
        return Err(bad(format!("a cookie is 1 to {MAX_COOKIE} bytes")));
    }
    Ok(cookie.to_string())
}

/// The cookie at `path`, created (32 random bytes as hex, mode 0600, written atomically) when absent.
pub fn ensure(path: &Path) -> Result<String, ClusterError> {
    if !path.exists() {
        let bytes: [u8; 32] = rand::random();
        let cookie: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        crate::fsutil::atomic_write_mode(path, cookie.as_bytes(), Some(0o600))
            .map_err(|e| ClusterError::Cookie(format!("cannot create {}: {e}", path.display())))?;
        tracing::info!(event = "cluster.cookie_created", path = %path.display(), "cluster cookie created: give workers this file (mode 0600)");
    }
    read(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_cookie_is_private_and_a_readable_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.cookie");
        let made = ensure(&path).unwrap();
        assert_eq!(made.len(), 64);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(ensure(&path).unwrap(), made, "an existing cookie is kept");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "  \n").unwrap();
        assert!(read(&path).is_err(), "an empty cookie is refused");
    }
}
