//! Killing a process at random points of codex commits (200 times) always leaves codex.toml parseable and
//! equal to the old or the new version — never torn. The child process is this test binary itself, running
//! the real commit code in a loop until it is SIGKILLed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use batos_actors::codex::amend::{commit, Changes, Proposal};
use batos_actors::codex::Codex;
use rand::Rng;

const ENV: &str = "BATOS_COMMIT_LOOP_PATH";

fn proposal(text: &str) -> Proposal {
    Proposal {
        persona: "BRICK".into(),
        changes: Changes {
            system_prompt: Some(format!("You are BRICK. {text}")),
            ..Default::default()
        },
        rationale: "kill test".into(),
    }
}

fn shipped() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/codex.toml")).unwrap()
}

/// The child: commits A and B alternately, forever.
#[test]
#[ignore = "run as a child process by kill_at_random_points_of_commits"]
fn child_commit_loop() {
    let Ok(path) = std::env::var(ENV) else { return };
    let path = PathBuf::from(path);
    println!("ready");
    let mut i = 0u64;
    loop {
        let p = if i.is_multiple_of(2) {
            proposal("Version A.")
        } else {
            proposal("Version B.")
        };
        let _ = commit(&path, &p, 3);
        i += 1;
    }
}

fn version(base: &str, p: &Proposal, dir: &Path) -> String {
    let path = dir.join("codex.toml");
    std::fs::write(&path, base).unwrap();
    commit(&path, p, 3).unwrap();
    std::fs::read_to_string(&path).unwrap()
}

#[test]
fn kill_at_random_points_of_commits() {
    let scratch = tempfile::tempdir().unwrap();
    let original = shipped();
    let a = version(&original, &proposal("Version A."), scratch.path());
    let b = version(&a, &proposal("Version B."), scratch.path());
    assert_eq!(
        version(&b, &proposal("Version A."), scratch.path()),
        a,
        "commits are deterministic"
    );
    let allowed = [original.clone(), a, b];

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("codex.toml");
    std::fs::write(&path, &original).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let mut changed = 0;
    for round in 0..200 {
        let mut child = Command::new(&exe)
            .args([
                "child_commit_loop",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.random_range(500..40_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        let now = std::fs::read_to_string(&path).unwrap();
        Codex::parse(&now)
            .unwrap_or_else(|e| panic!("round {round}: codex.toml unparseable: {e}\n{now}"));
        assert!(
            allowed.contains(&now),
            "round {round}: codex.toml is neither the old nor a new version:\n{now}"
        );
        if now != original {
            changed += 1;
        }
    }
    assert!(changed > 0, "the child must have committed at least once");
}
