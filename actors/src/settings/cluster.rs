//! The `[cluster]` table: worker nodes (README, "Beyond one machine"). A home node (the daemon with `enabled =
//! true`) listens for workers; a worker (`batos node run`) reads the same table to find its home.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What a persona's model call does when no worker node serves it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhenNoNode {
    /// Run it on this machine's own backend.
    Local,
    /// Fail at once with `unavailable`, naming the role.
    Unavailable,
}

/// `[cluster]` (read at start). A settings file written before it loads with these defaults, which are the
/// shipped values: one machine, no node server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// Home only: whether this daemon listens for worker nodes.
    pub enabled: bool,
    /// Home only: `IP:PORT` its node server listens on. A non-loopback address needs `tls = true`.
    pub listen: String,
    /// This node's name, unique in the cluster (`home` for the home node).
    pub node_name: String,
    /// Worker only: the home's `IP:PORT`. A non-loopback address needs `tls = true`.
    pub home: String,
    /// The shared secret every node must present (the magic cookie of the node handshake). The file must be
    /// private (no group or other permission bits). Empty: `<data_dir>/cluster.cookie`, which a home creates
    /// on its first start; relative paths resolve from the settings file's folder.
    pub cookie_file: PathBuf,
    /// Worker only: the roles it serves (at least one). `think`: persona model calls, on the worker's `[llm]`
    /// backend. `tools`: sandboxed tool runs, in the worker's own sandbox pool under its own `[tools]` policy.
    /// `train`: the training part of trainer runs, on the worker's CPU (`[trainer] threads`) over its own copy
    /// of the base model (`[llm.embedded] model_path`, checked against the home's SHA-256).
    pub roles: Vec<String>,
    /// Home only: personas whose model calls go to worker nodes; `"*"` is every persona.
    pub remote_personas: Vec<String>,
    /// Home only: whether sandboxed tool runs (forged tools' calls, the ToolForge's tests) go to worker nodes
    /// serving `tools`.
    pub remote_tools: bool,
    /// Home only: whether trainer runs train on worker nodes serving `train` (the golden set, the gate and the
    /// swap stay home).
    pub remote_training: bool,
    /// Home only: what a remote call (a remote persona's, or a tool run with `remote_tools`) does when no
    /// node serves its role: run here, or fail at once naming the role.
    pub when_no_node: WhenNoNode,
    /// Milliseconds one attempt of a remote model call or tool run may take (its own time included); also the
    /// longest a retry waits for a node to serve.
    pub call_timeout_ms: u64,
    /// Milliseconds one attempt of a remote training run may take.
    pub train_timeout_ms: u64,
    /// Milliseconds between the home's questions to a worker about a training run: its progress (for
    /// `trainer.progress`) and, once the run is cancelled, the cancel.
    pub progress_poll_ms: u64,
    /// Attempts after the first when a node is lost or silent; each retry keeps the call's id, so a node that
    /// already ran it answers from its record instead of running it again.
    pub retries: u32,
    /// Milliseconds between attempts (time for a lost node's return, or for the next node to be picked).
    pub retry_backoff_ms: u64,
    /// Bytes: the largest frame a node accepts from a peer, and the largest reply the home reads. A trained
    /// adapter comes back whole in one reply (about 5 MB with the shipped targets on the 135M model).
    pub max_frame_bytes: u64,
    /// Worker only: finished calls remembered by id, so a retried call is answered without running again.
    pub dedupe_capacity: usize,
    /// Worker only: milliseconds between attempts to reach a home that is down or was lost.
    pub reconnect_ms: u64,
    /// TLS on the node link, both ways (mutual): every node presents `tls_cert`, signed by `tls_ca`, and checks
    /// the other's against it. A home with it on refuses clear-text nodes; a worker with it on refuses a home
    /// without it.
    pub tls: bool,
    /// This node's certificate chain (PEM). The home's must name its `listen` IP as a subject alternative name.
    pub tls_cert: PathBuf,
    /// This node's private key (PEM; keep it mode 0600).
    pub tls_key: PathBuf,
    /// The cluster's CA certificate(s) (PEM): the only signer a peer's certificate is accepted from.
    pub tls_ca: PathBuf,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "127.0.0.1:5590".into(),
            node_name: "home".into(),
            home: "127.0.0.1:5590".into(),
            cookie_file: PathBuf::new(),
            roles: vec!["think".into()],
            remote_personas: vec!["*".into()],
            remote_tools: false,
            remote_training: false,
            when_no_node: WhenNoNode::Local,
            call_timeout_ms: 120_000,
            train_timeout_ms: 4 * 3600 * 1000,
            progress_poll_ms: 1000,
            retries: 2,
            retry_backoff_ms: 500,
            max_frame_bytes: 16 * 1024 * 1024,
            dedupe_capacity: 1024,
            reconnect_ms: 1000,
            tls: false,
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            tls_ca: PathBuf::new(),
        }
    }
}

/// The roles a worker may serve in this build.
pub const ROLES: &[&str] = &["think", "tools", "train"];

impl ClusterSettings {
    /// Whether `persona`'s model calls go to worker nodes (on a home with the cluster enabled).
    pub fn is_remote(&self, persona: &str) -> bool {
        self.enabled
            && self
                .remote_personas
                .iter()
                .any(|p| p == "*" || p.eq_ignore_ascii_case(persona))
    }

    /// The cookie file: `cookie_file`, or `<data_dir>/cluster.cookie` when it is empty.
    pub fn cookie_path(&self, data_dir: &std::path::Path) -> PathBuf {
        if self.cookie_file.as_os_str().is_empty() {
            data_dir.join("cluster.cookie")
        } else {
            self.cookie_file.clone()
        }
    }

    /// Checks the table; `Err((key, why))` names the first bad key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, addr) in [
            ("cluster.listen", &self.listen),
            ("cluster.home", &self.home),
        ] {
            let parsed: std::net::SocketAddr = addr
                .replacen("localhost:", "127.0.0.1:", 1)
                .parse()
                .map_err(|_| {
                    (
                        key,
                        format!("`{addr}` is not IP:PORT (for example 127.0.0.1:5590)"),
                    )
                })?;
            if !parsed.ip().is_loopback() && !self.tls {
                return Err((
                    key,
                    format!(
                        "`{addr}` is not a loopback address: set cluster.tls = true (with tls_cert, tls_key and \
                         tls_ca), or cookies, prompts and answers cross the network readable"
                    ),
                ));
            }
        }
        if self.tls {
            for (key, p) in [
                ("cluster.tls_cert", &self.tls_cert),
                ("cluster.tls_key", &self.tls_key),
                ("cluster.tls_ca", &self.tls_ca),
            ] {
                if p.as_os_str().is_empty() {
                    return Err((key, "must name a PEM file when cluster.tls = true".into()));
                }
            }
        }
        let name_ok = !self.node_name.is_empty()
            && self.node_name.len() <= 64
            && self
                .node_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err((
                "cluster.node_name",
                "must be 1 to 64 ASCII letters, digits, '-' or '_'".into(),
            ));
        }
        if self.roles.is_empty() {
            return Err((
                "cluster.roles",
                format!("a worker serves at least one role ({})", ROLES.join(", ")),
            ));
        }
        if let Some(r) = self.roles.iter().find(|r| !ROLES.contains(&r.as_str())) {
            return Err((
                "cluster.roles",
                format!(
                    "unknown role `{r}` (this build serves: {})",
                    ROLES.join(", ")
                ),
            ));
        }
        if self.call_timeout_ms == 0
            || self.reconnect_ms == 0
            || self.train_timeout_ms == 0
            || self.progress_poll_ms == 0
        {
            return Err((
                "cluster.call_timeout_ms",
                "call_timeout_ms, train_timeout_ms, progress_poll_ms and reconnect_ms must be positive".into(),
            ));
        }
        if self.max_frame_bytes < 64 * 1024 {
            return Err((
                "cluster.max_frame_bytes",
                "must be at least 65536 (a model's answer and its envelope)".into(),
            ));
        }
        if self.dedupe_capacity == 0 {
            return Err(("cluster.dedupe_capacity", "must be at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_defaults_pass_and_a_public_address_or_unknown_role_is_refused() {
        assert!(ClusterSettings::default().check().is_ok());
        let public = ClusterSettings {
            listen: "0.0.0.0:5590".into(),
            ..Default::default()
        };
        let (key, why) = public.check().unwrap_err();
        assert_eq!(key, "cluster.listen");
        assert!(why.contains("tls"), "{why}");
        let no_files = ClusterSettings {
            listen: "0.0.0.0:5590".into(),
            tls: true,
            ..Default::default()
        };
        assert_eq!(no_files.check().unwrap_err().0, "cluster.tls_cert");
        let tls = ClusterSettings {
            tls_cert: "c.pem".into(),
            tls_key: "k.pem".into(),
            tls_ca: "ca.pem".into(),
            ..no_files
        };
        assert!(tls.check().is_ok(), "with TLS a public address is allowed");
        let role = ClusterSettings {
            roles: vec!["think".into(), "dream".into()],
            ..Default::default()
        };
        assert_eq!(role.check().unwrap_err().0, "cluster.roles");
        let none = ClusterSettings {
            roles: Vec::new(),
            ..Default::default()
        };
        assert_eq!(none.check().unwrap_err().0, "cluster.roles");
        let both = ClusterSettings {
            roles: vec!["think".into(), "tools".into()],
            ..Default::default()
        };
        assert!(both.check().is_ok());
        let name = ClusterSettings {
            node_name: "w 1".into(),
            ..Default::default()
        };
        assert_eq!(name.check().unwrap_err().0, "cluster.node_name");
    }

    #[test]
    fn remote_personas_are_matched_by_name_or_star_only_when_enabled() {
        let mut c = ClusterSettings {
            remote_personas: vec!["brick".into()],
            ..Default::default()
        };
        assert!(!c.is_remote("BRICK"), "a disabled cluster routes nothing");
        c.enabled = true;
        assert!(c.is_remote("BRICK"));
        assert!(!c.is_remote("ROBIN"));
        c.remote_personas = vec!["*".into()];
        assert!(c.is_remote("ROBIN"));
    }
}
