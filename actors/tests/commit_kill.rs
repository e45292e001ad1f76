//! Killing a process at random points of codex commits (200 times) always leaves codex.toml parseable and
//! equal to the old or the new version — never torn; and killing it at random points of whole approvals
//! (200 times) always leaves the amendment ledger consistent with codex.toml once settled at the next start.
//! The child process is this test binary itself, running the real code in a loop until it is SIGKILLed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use batos_actors::codex::amend::{commit, Amendment, AmendmentStatus, Changes, Proposal};
use batos_actors::codex::ledger::Ledger;
use batos_actors::codex::Codex;
use rand::Rng;

const ENV: &str = "BATOS_COMMIT_LOOP_PATH";
const LEDGER_ENV: &str = "BATOS_APPROVE_LOOP_DIR";
/// Decided amendments the kill test's ledger keeps (small, so each write stays quick).
const KEEP_DECIDED: usize = 20;

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

fn prompt_of(codex: &Codex) -> String {
    codex.persona("BRICK").unwrap().system_prompt.clone()
}

/// The child: settles the ledger as the codex organ does at start, then proposes and approves amendments
/// forever, each one changing BRICK's prompt from what codex.toml holds now (so every approval changes it).
#[test]
#[ignore = "run as a child process by kill_at_random_points_of_approvals"]
fn child_approve_loop() {
    let Ok(dir) = std::env::var(LEDGER_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let (codex_path, store) = (dir.join("codex.toml"), dir.join("amendments.json"));
    let mut ledger = Ledger::load(&store);
    ledger.recover(&Codex::load(&codex_path).unwrap(), KEEP_DECIDED);
    let mut n = 0u64;
    loop {
        let now = prompt_of(&Codex::load(&codex_path).unwrap());
        let text = if now.ends_with("Version A.") {
            "Version B."
        } else {
            "Version A."
        };
        ledger.amendments.push(Amendment {
            id: format!("{}-{n}", std::process::id()),
            proposal: proposal(text),
            status: AmendmentStatus::Pending,
            task_id: None,
            created_at: 0.0,
            decided_at: None,
            reason: None,
            diff: None,
            backup: None,
            approving: None,
        });
        ledger.save(KEEP_DECIDED).unwrap();
        let i = ledger.amendments.len() - 1;
        let _ = ledger.approve(i, &codex_path, 3, KEEP_DECIDED);
        n += 1;
    }
}

#[test]
fn kill_at_random_points_of_approvals() {
    let dir = tempfile::tempdir().unwrap();
    let original = shipped();
    let (codex_path, store) = (
        dir.path().join("codex.toml"),
        dir.path().join("amendments.json"),
    );
    std::fs::write(&codex_path, &original).unwrap();
    let original_prompt = prompt_of(&Codex::parse(&original).unwrap());
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let (mut settled, mut committed_rounds) = (0, 0);
    for round in 0..200 {
        let mut child = Command::new(&exe)
            .args([
                "child_approve_loop",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(LEDGER_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.random_range(2_000..60_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            !store.with_extension("corrupt").exists(),
            "round {round}: the ledger was torn"
        );
        let codex = Codex::load(&codex_path)
            .unwrap_or_else(|e| panic!("round {round}: codex.toml unparseable: {e}"));
        let mut ledger = Ledger::load(&store);
        if ledger.amendments.iter().any(|a| a.approving.is_some()) {
            settled += 1;
        }
        ledger.recover(&codex, KEEP_DECIDED);
        assert!(ledger.amendments.iter().all(|a| a.approving.is_none()));
        // Consistent: the newest committed amendment is what codex.toml holds (or none, and it is as shipped).
        let newest = ledger
            .amendments
            .iter()
            .filter(|a| a.status == AmendmentStatus::Committed)
            .max_by(|a, b| a.decided_at.unwrap().total_cmp(&b.decided_at.unwrap()));
        let expected = match newest {
            Some(a) => {
                committed_rounds += 1;
                a.proposal.changes.system_prompt.clone().unwrap()
            }
            None => original_prompt.clone(),
        };
        assert_eq!(
            prompt_of(&codex),
            expected,
            "round {round}: codex.toml and the ledger disagree"
        );
    }
    assert!(
        committed_rounds > 0,
        "the child must have approved at least once"
    );
    println!("{settled} of 200 kills fell inside an approval and were settled");
}
