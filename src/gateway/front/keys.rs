//! The gateway's CurveZMQ keys, as files a person can manage with pyzmq's own tools.
//!
//! `data_dir/curve/` holds the server's long-term key pair in ZeroMQ's certificate format (what
//! `zmq.auth.create_certificates` writes and `zmq.auth.load_certificate` reads): `server.key` with the public
//! key only, to hand to clients, and `server.key_secret` with both, private (0600; a secret file others may
//! read is refused at start, as ssh refuses a readable private key). The pair is made at the first start
//! with CURVE on. `curve/clients/` holds the public keys of the clients allowed in (ZAP-style: a key not
//! there is refused during the handshake): any file whose `public-key = "…"` line, or whose whole text, is a
//! 40-character Z85 key. The folder is read at each handshake, so a key added or removed counts at the next
//! connection, without a restart.

use std::path::{Path, PathBuf};

use crypto_box::aead::OsRng;
use crypto_box::{PublicKey, SecretKey};

/// Bytes of a Curve25519 key.
pub const KEY_BYTES: usize = 32;
/// Characters of a Z85-encoded key.
const Z85_KEY_CHARS: usize = 40;
/// Largest key file read, in bytes (a certificate is a few hundred): a bigger file is not a key.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Why the keys could not be loaded or made.
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

/// The server's long-term key pair and where the allowed clients' keys are.
pub struct ServerKeys {
    /// The long-term secret key (s in RFC 26).
    pub secret: SecretKey,
    /// The long-term public key (S), which clients must know.
    pub public: PublicKey,
    clients: PathBuf,
}

impl ServerKeys {
    /// Loads the key pair from `dir` (`data_dir/curve`), making one at the first start; makes `dir/clients/`.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| KeyError::Io { path, source }
        };
        let clients = dir.join("clients");
        std::fs::create_dir_all(&clients).map_err(io(&clients))?;
        let secret_path = dir.join("server.key_secret");
        let secret = match std::fs::metadata(&secret_path) {
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
                SecretKey::from(bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = SecretKey::generate(&mut OsRng);
                let public = secret.public_key();
                let (p, s) = (encode(public.as_bytes()), encode(&secret.to_bytes()));
                let public_path = dir.join("server.key");
                batos_actors::fsutil::atomic_write_mode(
                    &public_path,
                    certificate(&p, None).as_bytes(),
                    Some(0o644),
                )
                .map_err(io(&public_path))?;
                batos_actors::fsutil::atomic_write_mode(
                    &secret_path,
                    certificate(&p, Some(&s)).as_bytes(),
                    Some(0o600),
                )
                .map_err(io(&secret_path))?;
                tracing::info!(event = "gateway.curve_keys_created", public_key = %p, dir = %dir.display(), "made the gateway's CURVE key pair");
                secret
            }
            Err(e) => return Err(io(&secret_path)(e)),
        };
        Ok(ServerKeys {
            public: secret.public_key(),
            secret,
            clients,
        })
    }

    /// The public key, Z85-encoded (what a client sets as `curve_serverkey`).
    pub fn public_z85(&self) -> String {
        encode(self.public.as_bytes())
    }

    /// The folder of allowed clients' public keys.
    pub fn clients_dir(&self) -> &Path {
        &self.clients
    }

    /// Whether `client` (a long-term public key) is among the allowed clients' keys now.
    pub fn allows(&self, client: &[u8; KEY_BYTES]) -> bool {
        let Ok(entries) = std::fs::read_dir(&self.clients) else {
            return false;
        };
        entries.flatten().any(|e| {
            read_small(&e.path())
                .ok()
                .and_then(|text| field(&text, "public-key"))
                .is_some_and(|key| &key == client)
        })
    }
}

/// A file's text, if it is small enough to be a key file.
fn read_small(path: &Path) -> std::io::Result<String> {
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
fn certificate(public: &str, secret: Option<&str>) -> String {
    let mut s = String::from(
        "#   BAT OS gateway CURVE certificate (ZeroMQ's format: zmq.auth.load_certificate reads it)\n",
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
    fn z85_reads_libzmqs_test_keys_and_a_made_pair_survives_a_restart() {
        // The key pair of libzmq's own documentation (doc/zmq_curve.txt): the public key derives from the secret.
        let secret = decode("JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6").unwrap();
        let public = SecretKey::from(secret).public_key();
        assert_eq!(
            encode(public.as_bytes()),
            "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
        );
        assert!(decode("too short").is_none());
        let dir = tempfile::tempdir().unwrap();
        let made = ServerKeys::load_or_create(dir.path()).unwrap();
        let again = ServerKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(made.public_z85(), again.public_z85());
        let public_file = std::fs::read_to_string(dir.path().join("server.key")).unwrap();
        assert!(!public_file.contains("secret-key"));
        assert_eq!(
            field(&public_file, "public-key").unwrap(),
            *made.public.as_bytes()
        );
        // A client key is allowed once its file is in the folder, in either form.
        let client = *SecretKey::generate(&mut OsRng).public_key().as_bytes();
        assert!(!made.allows(&client));
        std::fs::write(made.clients_dir().join("alice.key"), encode(&client)).unwrap();
        assert!(made.allows(&client));
        std::fs::remove_file(made.clients_dir().join("alice.key")).unwrap();
        std::fs::write(
            made.clients_dir().join("alice.key"),
            certificate(&encode(&client), None),
        )
        .unwrap();
        assert!(made.allows(&client));
        // A secret file others can read is refused.
        use std::os::unix::fs::PermissionsExt;
        let secret_path = dir.path().join("server.key_secret");
        std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ServerKeys::load_or_create(dir.path()).err().unwrap();
        assert!(matches!(e, KeyError::NotPrivate { .. }), "{e}");
    }
}
