//! The `batos-client` binary on its own, with no daemon (the e2e suite of the root crate drives a real daemon
//! with it: `the_client_binary_without_the_engine_drives_the_daemon_as_batos_does`): its commands, its
//! answers to bad settings and a daemon that is not there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

fn client() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_batos-client"));
    c.env_remove("BATOS_TOKEN").env_remove("BATOS_CONFIG");
    c
}

/// The shipped settings with the client's endpoint on a free port nobody listens on and short timeouts.
fn settings(dir: &std::path::Path) -> std::path::PathBuf {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/settings.toml"
    ))
    .unwrap();
    let mut doc: toml_edit::DocumentMut = text.parse().unwrap();
    doc["data_dir"] = toml_edit::value(dir.join("data").display().to_string());
    doc["gateway"]["command_endpoint"] = toml_edit::value(format!("tcp://127.0.0.1:{port}"));
    doc["client"]["timeout_ms"] = toml_edit::value(300);
    doc["client"]["retries"] = toml_edit::value(1);
    let path = dir.join("settings.toml");
    std::fs::write(&path, doc.to_string()).unwrap();
    path
}

#[test]
fn help_lists_the_commands_that_talk_to_a_daemon_and_not_run() {
    let out = client().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for c in [
        "send",
        "watch",
        "tui",
        "status",
        "ping",
        "rate",
        "curator",
        "trainer",
        "rollback",
        "goals",
        "motivator",
        "exam",
        "life",
        "image",
        "call",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{c} "))),
            "`{c}` missing from:\n{help}"
        );
    }
    assert!(
        !help.lines().any(|l| l.trim_start().starts_with("run ")),
        "{help}"
    );
    // `forge`, the trainer's name before issue 29, is hidden from the list but still works (below).
    assert!(
        !help.lines().any(|l| l.trim_start().starts_with("forge ")),
        "{help}"
    );
}

#[test]
fn the_trainers_old_command_name_still_works_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let config = settings(dir.path());
    for (args, deprecated) in [
        (&["trainer", "status"][..], false),
        (&["forge", "status"][..], true),
        (&["trainer", "train", "BRICK"][..], false),
    ] {
        let out = client()
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // No daemon: each is parsed and sent, and fails the way every command does without one.
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("is the daemon running?"), "{stderr}");
        assert_eq!(
            stderr.contains("`batos forge` is deprecated (one release): use `batos trainer`"),
            deprecated,
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn no_daemon_is_exit_1_after_the_configured_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let config = settings(dir.path());
    let started = Instant::now();
    let out = client()
        .args(["ping", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no reply from tcp://127.0.0.1:")
            && stderr.contains("2 attempts")
            && stderr.contains("is the daemon running?"),
        "{stderr}"
    );
    // Two attempts of 300 ms, not the shipped 4 × 2.5 s: the settings file was read.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn bad_settings_are_exit_2_naming_the_file_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = client()
        .args(["status", "--config", "/nonexistent/settings.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/settings.toml"));

    let config = settings(dir.path());
    let text = std::fs::read_to_string(&config).unwrap();
    let mut doc: toml_edit::DocumentMut = text.parse().unwrap();
    doc["gateway"]["heartbeat_ms"] = toml_edit::value(0);
    std::fs::write(&config, doc.to_string()).unwrap();
    let out = client()
        .args(["ping", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gateway.heartbeat_ms"));

    let out = client()
        .args(["call", "--config"])
        .arg(&config)
        .args(["ping", "[1]"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad settings file is found first"
    );
}

#[test]
fn call_refuses_arguments_that_are_not_one_json_object() {
    let dir = tempfile::tempdir().unwrap();
    let config = settings(dir.path());
    for (args, says) in [("[1]", "one JSON object"), ("{", "not valid JSON")] {
        let out = client()
            .args(["call", "--config"])
            .arg(&config)
            .args(["ping", args])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains(says));
    }
}
