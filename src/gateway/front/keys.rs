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

use crypto_box::{PublicKey, SecretKey};

use batos_curve::KeyPair;
pub use batos_curve::{certificate, decode, encode, field, read_small, KeyError, KEY_BYTES};

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
        let clients = dir.join("clients");
        std::fs::create_dir_all(&clients).map_err(|source| KeyError::Io {
            path: clients.clone(),
            source,
        })?;
        let (pair, made) = KeyPair::load_or_create(dir, "server")?;
        if made {
            tracing::info!(event = "gateway.curve_keys_created", public_key = %encode(pair.public.as_bytes()), dir = %dir.display(), "made the gateway's CURVE key pair");
        }
        Ok(ServerKeys {
            public: pair.public,
            secret: pair.secret,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crypto_box::aead::OsRng;

    #[test]
    fn a_made_pair_survives_a_restart_and_clients_are_allowed_by_their_files() {
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
