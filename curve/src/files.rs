//! Key files as ZeroMQ writes and reads them (`zmq.auth.create_certificates`, `zmq.auth.load_certificate`):
//! `NAME.key` with the public key only, to hand out, and `NAME.key_secret` with both, private (0600; a secret
//! file others may read is refused, as ssh refuses a readable private key). Keys are 40-character Z85 text.

use std::io::Write;
use std::path::{Path, PathBuf};

use crypto_box::aead::OsRng;
use crypto_box::{PublicKey, SecretKey};

use crate::KEY_BYTES;

/// Characters of a Z85-encoded key.
const Z85_KEY_CHARS: usize = 40;
/// Largest key file read, in bytes (a certificate is a few hundred): a bigger file is not a key.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Why a key pair could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The secret file can be read by others than its owner.
    #[error("{path} is readable by others (mode {mode:o}): make it private with chmod 600")]
    NotPrivate {
        /// The secret file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file holds no valid key.
    #[error("{path}: no valid {what} (a 40-character Z85 key)")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// `public-key` or `secret-key`.
        what: &'static str,
    },
}

/// A long-term key pair kept as `dir/NAME.key` and `dir/NAME.key_secret`.
pub struct KeyPair {
    /// The secret key (c or s in RFC 26).
    pub secret: SecretKey,
    /// The public key (C or S).
    pub public: PublicKey,
}

impl KeyPair {
    /// Loads the pair `NAME` from `dir`, or makes it there (the folder too) when it does not exist yet;
    /// `true` when it was made now.
    pub fn load_or_create(dir: &Path, name: &str) -> Result<(Self, bool), KeyError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| KeyError::Io { path, source }
        };
        let secret_path = dir.join(format!("{name}.key_secret"));
        match std::fs::metadata(&secret_path) {
            Ok(meta) => {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyError::NotPrivate {
                        path: secret_path,
                        mode,
                    });
                }
                let text = read_small(&secret_path).map_err(io(&secret_path))?;
                let bytes = field(&text, "secret-key").ok_or(KeyError::Malformed {
                    path: secret_path.clone(),
                    what: "secret-key",
                })?;
                let secret = SecretKey::from(bytes);
                Ok((
                    KeyPair {
                        public: secret.public_key(),
                        secret,
                    },
                    false,
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                let secret = SecretKey::generate(&mut OsRng);
                let public = secret.public_key();
                let (p, s) = (encode(public.as_bytes()), encode(&secret.to_bytes()));
                let public_path = dir.join(format!("{name}.key"));
                write_private(&public_path, &certificate(&p, None), 0o644)
                    .map_err(io(&public_path))?;
                write_private(&secret_path, &certificate(&p, Some(&s)), 0o600)
                    .map_err(io(&secret_path))?;
                Ok((KeyPair { secret, public }, true))
            }
            Err(e) => Err(io(&secret_path)(e)),
        }
    }
}

/// Writes `text` to `path` atomically (a temporary file in the same folder, synced, renamed over it) with
/// permission bits `mode` from the start, so a secret is never readable by others, not even for a moment.
fn write_private(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A file's text, if it is small enough to be a key file.
pub fn read_small(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() || meta.len() > MAX_KEY_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a key file",
        ));
    }
    std::fs::read_to_string(path)
}

/// The key named `name` in a certificate (`name = "…"`), or the file's whole text when it is one bare key.
pub fn field(text: &str, name: &str) -> Option<[u8; KEY_BYTES]> {
    let quoted = text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
    });
    let z = quoted.unwrap_or_else(|| text.trim().to_string());
    decode(&z)
}

/// A 40-character Z85 key (RFC 32) as its 32 bytes.
pub fn decode(z: &str) -> Option<[u8; KEY_BYTES]> {
    if z.len() != Z85_KEY_CHARS {
        return None;
    }
    z85::decode(z).ok()?.try_into().ok()
}

/// 32 key bytes as Z85.
pub fn encode(key: &[u8]) -> String {
    z85::encode(key)
}

/// ZeroMQ's certificate text (ZPL), the public key and, for the secret file, the secret one.
pub fn certificate(public: &str, secret: Option<&str>) -> String {
    let mut s = String::from(
        "#   BAT OS CURVE certificate (ZeroMQ's format: zmq.auth.load_certificate reads it)\n",
    );
    if secret.is_some() {
        s.push_str("#   The secret key: keep this file private.\n");
    }
    s.push_str("metadata\ncurve\n");
    s.push_str(&format!("    public-key = \"{public}\"\n"));
    if let Some(secret) = secret {
        s.push_str(&format!("    secret-key = \"{secret}\"\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z85_reads_libzmqs_test_keys_and_a_made_pair_survives_a_reload() {
        // The key pair of libzmq's own documentation (doc/zmq_curve.txt): the public key derives from the secret.
        let secret = decode("JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6").unwrap();
        let public = SecretKey::from(secret).public_key();
        assert_eq!(
            encode(public.as_bytes()),
            "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
        );
        assert!(decode("too short").is_none());
        let dir = tempfile::tempdir().unwrap();
        let (made, fresh) = KeyPair::load_or_create(&dir.path().join("k"), "me").unwrap();
        assert!(fresh);
        let (again, fresh) = KeyPair::load_or_create(&dir.path().join("k"), "me").unwrap();
        assert!(!fresh);
        assert_eq!(made.public.as_bytes(), again.public.as_bytes());
        let public_file = std::fs::read_to_string(dir.path().join("k/me.key")).unwrap();
        assert!(!public_file.contains("secret-key"));
        assert_eq!(
            field(&public_file, "public-key").unwrap(),
            *made.public.as_bytes()
        );
        use std::os::unix::fs::PermissionsExt;
        let secret_path = dir.path().join("k/me.key_secret");
        let mode = std::fs::metadata(&secret_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = KeyPair::load_or_create(&dir.path().join("k"), "me")
            .err()
            .unwrap();
        assert!(matches!(e, KeyError::NotPrivate { .. }), "{e}");
    }
}
