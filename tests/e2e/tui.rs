//! `batos tui` (issue 18) driven in tmux against the real daemon (scripted Ollama double), as a person would:
//! submit a task from the input line and see it finish; approve a pending amendment behind its confirmation and
//! see the codex change; crash a persona and see its panel and the tree show the restart; kill the daemon and see
//! the overlay; start it again and see the state come back with no gap left.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

const NEW_PROMPT: &str = "You are BRICK, and the TUI approved this.";

/// A tmux server of its own, holding one session that runs the TUI.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(d: &Daemon) -> Self {
        let socket = format!("batos-tui-{}-{}", std::process::id(), free_port());
        let cmd = format!(
            "env -u BATOS_TOKEN {} tui --config {}",
            batos_bin().to_string_lossy(),
            d.config.display()
        );
        let ok = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "120",
                "-y",
                "40",
                &cmd,
            ])
            .env("TERM", "xterm-256color")
            .status()
            .expect("tmux is installed by scripts/setup.sh");
        assert!(ok.success(), "tmux did not start");
        Tmux { socket }
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// Types `text` literally.
    fn text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "t", "-l", text]);
    }

    /// Presses named keys (`Enter`, `Tab`, `Escape`).
    fn key(&self, key: &str) {
        self.tmux(&["send-keys", "-t", "t", key]);
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned()
    }

    /// The TUI's process id (tmux runs `env`, which becomes `batos`).
    fn pid(&self) -> u32 {
        let out = self.tmux(&["list-panes", "-t", "t", "-F", "#{pane_pid}"]);
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    /// Waits until the screen satisfies `pred` (panics with the screen after `secs`).
    fn wait(&self, secs: u64, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            if started.elapsed() > Duration::from_secs(secs) {
                panic!("TUI did not show {what} in {secs} s:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_drives_the_daemon_from_the_tui() {
    let ollama = ScriptedOllama::start();
    let mut d = Daemon::start(&ollama.url, vec![]).await;
    let tui = Tmux::start(&d);
    tui.wait(20, "the four personas, connected", |s| {
        ["ALFRED", "BABS", "BRICK", "ROBIN", "●"]
            .iter()
            .all(|w| s.contains(w))
    });

    // A task from the input line, seen to finish on the Tasks screen.
    tui.text("s");
    tui.wait(5, "the input line", |s| s.contains("submit:"));
    tui.text("Name a colour.");
    tui.key("Enter");
    tui.text("2");
    tui.wait(30, "the task done", |s| {
        s.lines()
            .any(|l| l.contains("Name a colour.") && l.contains("done"))
    });

    // An amendment: pending on the Codex screen, approved behind the confirmation, committed to codex.toml.
    discordant_robin(&ollama, NEW_PROMPT);
    tui.text(":");
    tui.text("submit Should we automate the layoffs?");
    tui.key("Enter");
    tui.text("4");
    tui.wait(60, "a pending amendment", |s| {
        s.contains("pending") && s.contains("BRICK")
    });
    tui.text("a");
    tui.wait(5, "the confirmation", |s| {
        s.contains("approve amendment") && s.contains("y: yes")
    });
    tui.text("y");
    tui.wait(20, "the amendment committed", |s| s.contains("committed"));
    ollama.set_responder(|_, _| None);
    let codex = std::fs::read_to_string(d.path("config/codex.toml")).unwrap();
    assert!(codex.contains(NEW_PROMPT), "the codex did not change");

    // A crashed persona: its panel counts the restart, the tree shows it.
    let mut c = d.client();
    c.request("debug_crash", json!({"actor": "BRICK"}))
        .await
        .unwrap();
    tui.text("1");
    tui.wait(20, "BRICK's restart on its panel", |s| {
        s.contains("1 restarts")
    });
    tui.text("6");
    tui.wait(20, "the restart in the tree", |s| {
        s.lines().any(|l| l.contains("BRICK") && l.contains("↻1"))
    });

    // One command socket for the whole run: many refreshes and commands later, the TUI holds one connection to
    // the command port, and still the same one a refresh cycle (2 s) later.
    let port: u16 = d
        .settings()
        .gateway
        .command_endpoint
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let pid = tui.pid();
    let first = connections_to(pid, port);
    assert_eq!(
        first.len(),
        1,
        "TUI connections to the command port: {first:?}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        connections_to(pid, port),
        first,
        "the TUI changed its command socket"
    );

    // The daemon dies: the overlay within three heartbeats (200 ms each here), and it comes back with no gap.
    d.kill9();
    tui.wait(10, "the disconnected overlay", |s| {
        s.contains("disconnected")
    });
    d.spawn();
    d.wait_ready().await;
    tui.text("8");
    tui.wait(30, "the state reloaded", |s| {
        !s.contains("No heartbeat") && s.contains("resync")
    });
    // No gap left: the TUI shows the daemon's last seq (asked again while events may still arrive).
    let mut c = d.client();
    let started = Instant::now();
    loop {
        let seq = c.request("ping", json!({})).await.unwrap()["seq"]
            .as_u64()
            .unwrap();
        let s = tui.screen();
        if s.contains(&format!("seq {seq} ")) && s.contains("●") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the TUI is not at seq {seq}:\n{s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tui.text("q");
}

/// Local ports of `pid`'s established TCP connections to `port` on this machine (its socket inodes in
/// /proc/PID/fd, matched in /proc/net/tcp and tcp6).
fn connections_to(pid: u32, port: u16) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port_of =
                |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap_or(""), 16).ok();
            if f.len() > 9
                && f[3] == "01"
                && port_of(f[2]) == Some(port)
                && inodes.iter().any(|i| i == f[9])
            {
                ports.extend(port_of(f[1]));
            }
        }
    }
    ports.sort_unstable();
    ports
}
