//! Worker nodes under test (`batos node run`): real processes joining a home daemon over loopback.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::daemon::{batos_bin, free_port, Daemon, Edit};

/// Edit for a home daemon: the node server on a free loopback port, `when_no_node` as given, short retries.
pub fn home_edits(when_no_node: &'static str) -> Edit {
    let port = free_port();
    Box::new(move |doc| {
        doc["cluster"]["enabled"] = toml_edit::value(true);
        doc["cluster"]["listen"] = toml_edit::value(format!("127.0.0.1:{port}"));
        doc["cluster"]["when_no_node"] = toml_edit::value(when_no_node);
        doc["cluster"]["call_timeout_ms"] = toml_edit::value(10_000);
        doc["cluster"]["retries"] = toml_edit::value(3);
        doc["cluster"]["retry_backoff_ms"] = toml_edit::value(300);
    })
}

/// A worker node: its own settings file (its own Ollama double), its log, its process.
pub struct Worker {
    /// Its settings and data folder (never started as a daemon).
    pub files: Daemon,
    child: Option<Child>,
}

impl Worker {
    /// A worker named `name` for `home`, thinking through the Ollama at `ollama_url`, with the cookie at `cookie`.
    pub fn prepare(home: &Daemon, name: &str, ollama_url: &str, cookie: &Path) -> Self {
        Self::prepare_with(home, name, ollama_url, cookie, Vec::new())
    }

    /// Likewise, with more settings edits.
    pub fn prepare_with(
        home: &Daemon,
        name: &str,
        ollama_url: &str,
        cookie: &Path,
        mut more: Vec<Edit>,
    ) -> Self {
        let listen = home.settings().cluster.listen;
        let (name, cookie) = (name.to_string(), cookie.display().to_string());
        let mut edits: Vec<Edit> = vec![Box::new(move |doc| {
            doc["cluster"]["home"] = toml_edit::value(listen.as_str());
            doc["cluster"]["node_name"] = toml_edit::value(name.as_str());
            doc["cluster"]["cookie_file"] = toml_edit::value(cookie.as_str());
            doc["cluster"]["reconnect_ms"] = toml_edit::value(200);
        })];
        edits.append(&mut more);
        let files = Daemon::prepare(ollama_url, edits);
        Worker { files, child: None }
    }

    /// Starts (or restarts) the process.
    pub fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.files.log)
            .unwrap();
        let child = Command::new(batos_bin())
            .args(["node", "run", "--config"])
            .arg(&self.files.config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The exit status, once the process has ended by itself within `secs`.
    pub fn exited_within(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let c = self.child.as_mut()?;
        for _ in 0..secs * 20 {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.files.log).unwrap_or_default()
    }

    /// Its settings file.
    pub fn config(&self) -> PathBuf {
        self.files.config.clone()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A test CA and one node certificate it signed (for 127.0.0.1, server and client use), made with openssl.
pub struct Certs {
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The node certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM, PKCS#8).
    pub key: PathBuf,
}

impl Certs {
    /// Makes them under `dir`.
    pub fn make(dir: &Path) -> Self {
        fs::create_dir_all(dir).unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=batos-test-ca",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ][..],
        ]
        .concat());
        run(&[
            &["req"][..],
            &ec[..],
            &[
                "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=node",
            ][..],
        ]
        .concat());
        fs::write(
            dir.join("ext.cnf"),
            "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "node.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "node.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        Certs {
            ca: dir.join("ca.pem"),
            cert: dir.join("node.pem"),
            key: dir.join("node.key"),
        }
    }

    /// Edit: `cluster.tls` on with these files.
    pub fn edit(&self) -> Edit {
        let (ca, cert, key) = (
            self.ca.display().to_string(),
            self.cert.display().to_string(),
            self.key.display().to_string(),
        );
        Box::new(move |doc| {
            doc["cluster"]["tls"] = toml_edit::value(true);
            doc["cluster"]["tls_ca"] = toml_edit::value(ca.as_str());
            doc["cluster"]["tls_cert"] = toml_edit::value(cert.as_str());
            doc["cluster"]["tls_key"] = toml_edit::value(key.as_str());
        })
    }
}
