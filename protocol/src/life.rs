//! A life's wire types: the curriculum (JSON lines, one [`CurriculumTask`] each), the arguments of
//! `life_run`, what a life records ([`LifeRecord`]) and lists ([`LifeSummary`]), and the report that sets
//! several lives side by side ([`report`]).
//!
//! A life is measured by the exam: the full set at its start (beside the bare model) and at its end, a
//! held-out subset of it every `every` curriculum tasks. The subset's share right is the curve: every point of
//! every life is comparable, because the start and end exams are scored on the same subset too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::exam::CategoryScore;

/// Most tasks one curriculum may hold.
pub const MAX_CURRICULUM: usize = 5000;
/// Longest curriculum task, in bytes.
pub const MAX_TASK_BYTES: usize = 4096;
/// The loops a life can switch off, one per run (`--ablate`).
pub const LOOPS: [&str; 4] = ["memory", "tools", "trainer", "motivator"];

/// One task of a curriculum: what a person sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CurriculumTask {
    /// The task's text, as a person would send it (not blank, at most [`MAX_TASK_BYTES`]).
    pub text: String,
    /// What kind of task it is (`fact`, `computation`, `request`, …): a label for the record only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Parses a curriculum: JSON lines, blank lines and `#` lines ignored; an error names the line. At least one
/// task, at most [`MAX_CURRICULUM`].
pub fn parse_curriculum(text: &str) -> Result<Vec<CurriculumTask>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let t: CurriculumTask =
            serde_json::from_str(line).map_err(|e| format!("curriculum line {n}: {e}"))?;
        if t.text.trim().is_empty() {
            return Err(format!("curriculum line {n}: `text` must not be blank"));
        }
        if t.text.len() > MAX_TASK_BYTES {
            return Err(format!(
                "curriculum line {n}: `text` is longer than {MAX_TASK_BYTES} bytes"
            ));
        }
        out.push(t);
        if out.len() > MAX_CURRICULUM {
            return Err(format!("more than {MAX_CURRICULUM} curriculum tasks"));
        }
    }
    if out.is_empty() {
        return Err("the curriculum holds no task".into());
    }
    Ok(out)
}

/// Arguments of `life_run`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LifeRunArgs {
    /// The curriculum: the text of a JSON-lines file (see [`parse_curriculum`]).
    pub curriculum: String,
    /// The exam set: the text of an exam JSON-lines file (see `exam::parse_set`).
    pub exam: String,
    /// A check (the held-out subset) after every this many curriculum tasks (at least 1).
    pub every: u32,
    /// Seconds after which no new curriculum task is sent (the end exam still runs); absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_s: Option<u64>,
    /// Only the first this many curriculum tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// One loop switched off for the whole life (one of [`LOOPS`]), for an ablation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ablate: Option<String>,
    /// The experiment's amendment policy: a codex amendment the household proposes during the life is
    /// approved by the life (recorded as such) instead of waiting for a human. Off by default.
    #[serde(default)]
    pub approve_amendments: bool,
    /// A label for the list and the report (default `life`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl LifeRunArgs {
    /// Checks what serde cannot: the curriculum and the loop name (the exam set is checked by the exam).
    pub fn validate(&self) -> Result<Vec<CurriculumTask>, String> {
        if self.every == 0 {
            return Err("`every` must be at least 1".into());
        }
        if let Some(a) = &self.ablate {
            if !LOOPS.contains(&a.as_str()) {
                return Err(format!(
                    "`ablate` must be one of {} (got {:?})",
                    LOOPS.join(", "),
                    crate::truncate(a, 64)
                ));
            }
        }
        if self.limit == Some(0) {
            return Err("`limit` must be at least 1".into());
        }
        let mut tasks = parse_curriculum(&self.curriculum)?;
        if let Some(n) = self.limit {
            tasks.truncate(n as usize);
        }
        Ok(tasks)
    }
}

/// Where a life stands: `running` (also resumed after a restart), `done` (the curriculum or its time spent and
/// the end exam scored), `cancelled` (`life_cancel`) or `failed` — the same states as an exam run's.
pub use crate::exam::ExamStatus as LifeStatus;

/// One curriculum task as the life saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct LifeTaskRecord {
    /// Its place in the curriculum (0-based).
    pub index: u32,
    /// The task (absent when the orchestrator refused it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// How it ended: `done`, `failed`, `paused`, `cancelled`, `timeout`, `refused`.
    pub status: String,
    /// Wall time from sending to its end, in milliseconds.
    pub ms: u64,
}

/// One point of a life's curve.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct LifeExamPoint {
    /// `start` (the full set, beside the bare model), `check` (the held-out subset) or `end` (the full set).
    pub phase: String,
    /// The exam run (`batos exam show`).
    pub exam: String,
    /// Curriculum tasks done when it was taken.
    pub at_task: u32,
    /// Share right on the held-out subset, in percent: the curve.
    pub check_pct: f64,
    /// Share right on the questions asked, in percent.
    pub pct: f64,
    /// The bare model's share right on the questions asked (the start only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bare_pct: Option<f64>,
    /// Per category, on the questions asked.
    pub categories: Vec<CategoryScore>,
    /// Unix seconds when it ended.
    pub at: f64,
}

/// A check that fell too far, and what was undone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct LifeRollback {
    /// Curriculum tasks done at the check.
    pub at_task: u32,
    /// The check before, percent.
    pub before: f64,
    /// This check, percent.
    pub after: f64,
    /// What was undone, in words.
    pub undone: Vec<String>,
}

/// What the loops did while the life ran, counted from their events.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct LoopActivity {
    /// `memory.updated` events (rows written by ingest or consolidation).
    pub memory_updates: u64,
    /// Tools the ToolForge made, and tools retired.
    pub tools_created: u64,
    /// See `tools_created`.
    pub tools_retired: u64,
    /// The Curator's decisions.
    pub curator_accepted: u64,
    /// See `curator_accepted`.
    pub curator_rejected: u64,
    /// The Curator's triggers, and of them those delivered to the trainer.
    pub triggers: u64,
    /// See `triggers`.
    pub triggers_delivered: u64,
    /// Trainer runs that swapped an adapter in, were refused by a gate, or failed.
    pub tuned: u64,
    /// See `tuned`.
    pub forge_rejected: u64,
    /// See `tuned`.
    pub forge_failed: u64,
    /// Optimizer steps the trainer reported.
    pub forge_steps: u64,
    /// The Motivator's goals.
    pub goals: u64,
    /// Amendments proposed, and of them approved by the life's policy.
    pub amendments_proposed: u64,
    /// See `amendments_proposed`.
    pub amendments_approved: u64,
}

/// Where a life's time went: wall and CPU seconds (the daemon's whole process) per phase. The loops run in
/// the quiet between tasks (the Curator's judge, the Motivator and the trainer wait for an idle household),
/// so the quiet phase is their cost; `trainer_s` is the wall time of the trainer's runs within it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct LifeCost {
    /// Wall seconds in curriculum tasks.
    pub tasks_s: f64,
    /// CPU seconds in curriculum tasks.
    pub tasks_cpu_s: f64,
    /// Wall seconds in exams.
    pub exams_s: f64,
    /// CPU seconds in exams.
    pub exams_cpu_s: f64,
    /// Wall seconds of quiet between tasks and waiting for the trainer to settle.
    pub quiet_s: f64,
    /// CPU seconds in that quiet.
    pub quiet_cpu_s: f64,
    /// Wall seconds from a trainer run's first progress to its end.
    pub trainer_s: f64,
    /// Tokens (prompt and completion) of the curriculum's tasks.
    pub task_tokens: u64,
}

/// A settings value a life switched for its duration, and the value it puts back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Switch {
    /// Dotted key (`memory.active`).
    pub key: String,
    /// The value before the life, as TOML (absent: the key was not in the file).
    pub before: Option<String>,
    /// The value during the life, as TOML.
    pub during: String,
}

/// A life's figures: what `life_list` lists and `life.ended` announces.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct LifeSummary {
    /// The life's id: 32 lowercase hex chars.
    pub id: String,
    /// Its label.
    pub name: String,
    /// The loop switched off, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ablate: Option<String>,
    /// Where it stands.
    pub status: String,
    /// Unix seconds at its start, and at its end.
    pub started_at: f64,
    /// See `started_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
    /// Curriculum tasks done, and in all.
    pub done: u32,
    /// See `done`.
    pub total: u32,
    /// The held-out subset's share right at the start and at the latest point, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_pct: Option<f64>,
    /// See `start_pct`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_pct: Option<f64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A whole life, as kept in `data_dir/life/<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LifeRecord {
    /// Its figures.
    pub summary: LifeSummary,
    /// What it was asked (the curriculum and the exam set as given).
    pub args: LifeRunArgs,
    /// The held-out subset: the exam question ids asked at every check.
    pub check_ids: Vec<String>,
    /// The settings it switched, put back at its end.
    pub switched: Vec<Switch>,
    /// Each curriculum task sent, in order.
    pub tasks: Vec<LifeTaskRecord>,
    /// The curve.
    pub exams: Vec<LifeExamPoint>,
    /// The exam running now (resumed after a restart): its phase and run id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exam_in_flight: Option<(String, String)>,
    /// Checks that fell too far, and what was undone.
    pub rollbacks: Vec<LifeRollback>,
    /// What the loops did.
    pub activity: LoopActivity,
    /// Where the time went.
    pub cost: LifeCost,
}

/// One life in a report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReportLife {
    /// The life.
    pub id: String,
    /// Its label.
    pub name: String,
    /// The loop it ran without (`None`: the full household).
    pub ablate: Option<String>,
    /// Its curve: (tasks done, held-out share right in percent).
    pub curve: Vec<(u32, f64)>,
    /// The first and last points of the curve.
    pub start: f64,
    /// See `start`.
    pub end: f64,
    /// `end - start`, in points.
    pub gain: f64,
    /// The full set's share right at the start and at the end (absent until the end exam).
    pub set_start: Option<f64>,
    /// See `set_start`.
    pub set_end: Option<f64>,
    /// Per category: (start, end) in percent, from the full exams at both ends.
    pub categories: BTreeMap<String, (f64, f64)>,
    /// What its loops did.
    pub activity: LoopActivity,
    /// Where its time went.
    pub cost: LifeCost,
}

/// Several lives side by side: each one's curve, and each loop's share of the full household's gain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LifeReport {
    /// Each life.
    pub lives: Vec<ReportLife>,
    /// The full lives' mean gain, in points (absent without a full life).
    pub full_gain: Option<f64>,
    /// The spread of the full lives' gains (max - min): the noise a share must beat.
    pub noise: Option<f64>,
    /// Per loop: the full gain minus the mean gain of the lives run without it (points). A share within the
    /// noise is no measured contribution.
    pub shares: BTreeMap<String, f64>,
    /// The same three on the full set (start and end exams), for the lives that reached their end.
    pub set_gain: Option<f64>,
    /// See `set_gain`.
    pub set_noise: Option<f64>,
    /// See `set_gain`.
    pub set_shares: BTreeMap<String, f64>,
}

/// Sets lives side by side (only those with at least one point count).
pub fn report(records: &[LifeRecord]) -> LifeReport {
    let mut lives = Vec::new();
    for r in records {
        let curve: Vec<(u32, f64)> = r.exams.iter().map(|e| (e.at_task, e.check_pct)).collect();
        let (Some(first), Some(last)) = (curve.first(), curve.last()) else {
            continue;
        };
        let full = |phase: &str| r.exams.iter().find(|e| e.phase == phase);
        let mut categories = BTreeMap::new();
        if let Some(s) = full("start") {
            for c in &s.categories {
                let end = full("end")
                    .and_then(|e| e.categories.iter().find(|x| x.category == c.category))
                    .map(|x| x.society_pct());
                categories.insert(
                    c.category.clone(),
                    (c.society_pct(), end.unwrap_or(c.society_pct())),
                );
            }
        }
        lives.push(ReportLife {
            id: r.summary.id.clone(),
            name: r.summary.name.clone(),
            ablate: r.summary.ablate.clone(),
            start: first.1,
            end: last.1,
            gain: last.1 - first.1,
            set_start: full("start").map(|e| e.pct),
            set_end: full("end").map(|e| e.pct),
            curve,
            categories,
            activity: r.activity.clone(),
            cost: r.cost.clone(),
        });
    }
    let (full_gain, noise, held_out) = loop_shares(&lives, |l| Some(l.gain));
    let (set_gain, set_noise, set_shares) =
        loop_shares(&lives, |l| Some(l.set_end? - l.set_start?));
    LifeReport {
        lives,
        full_gain,
        noise,
        shares: held_out,
        set_gain,
        set_noise,
        set_shares,
    }
}

/// The full lives' mean gain, their spread, and each loop's share (full mean minus the ablated lives' mean),
/// over the lives `gain` gives a figure for.
fn loop_shares(
    lives: &[ReportLife],
    gain: impl Fn(&ReportLife) -> Option<f64>,
) -> (Option<f64>, Option<f64>, BTreeMap<String, f64>) {
    let gains = |ablate: Option<&str>| -> Vec<f64> {
        lives
            .iter()
            .filter(|l| l.ablate.as_deref() == ablate)
            .filter_map(&gain)
            .collect()
    };
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let full = gains(None);
    let full_gain = mean(&full);
    let noise = (!full.is_empty()).then(|| {
        full.iter().cloned().fold(f64::MIN, f64::max)
            - full.iter().cloned().fold(f64::MAX, f64::min)
    });
    let mut shares = BTreeMap::new();
    if let Some(f) = full_gain {
        for l in LOOPS {
            if let Some(g) = mean(&gains(Some(l))) {
                shares.insert(l.to_string(), f - g);
            }
        }
    }
    (full_gain, noise, shares)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(id: &str, ablate: Option<&str>, curve: &[(u32, f64)]) -> LifeRecord {
        LifeRecord {
            summary: LifeSummary {
                id: id.into(),
                name: id.into(),
                ablate: ablate.map(str::to_string),
                ..Default::default()
            },
            args: LifeRunArgs {
                curriculum: String::new(),
                exam: String::new(),
                every: 1,
                for_s: None,
                limit: None,
                ablate: ablate.map(str::to_string),
                approve_amendments: false,
                name: None,
            },
            check_ids: Vec::new(),
            switched: Vec::new(),
            tasks: Vec::new(),
            exams: curve
                .iter()
                .enumerate()
                .map(|(i, (t, p))| LifeExamPoint {
                    phase: match i {
                        0 => "start",
                        i if i + 1 == curve.len() => "end",
                        _ => "check",
                    }
                    .into(),
                    at_task: *t,
                    check_pct: *p,
                    // The full set moves twice as far as the held-out subset here.
                    pct: 2.0 * *p,
                    ..Default::default()
                })
                .collect(),
            exam_in_flight: None,
            rollbacks: Vec::new(),
            activity: Default::default(),
            cost: Default::default(),
        }
    }

    #[test]
    fn a_loops_share_is_the_full_gain_it_takes_away_and_the_full_runs_give_the_noise() {
        let r = report(&[
            life("a", None, &[(0, 40.0), (10, 60.0)]),
            life("b", None, &[(0, 40.0), (10, 56.0)]),
            life("m", Some("memory"), &[(0, 40.0), (10, 45.0)]),
            life("t", Some("trainer"), &[(0, 40.0), (10, 58.0)]),
            life("empty", Some("tools"), &[]),
        ]);
        assert_eq!(r.lives.len(), 4, "a life with no point is left out");
        assert_eq!(r.full_gain, Some(18.0));
        assert_eq!(r.noise, Some(4.0));
        assert_eq!(r.shares.get("memory"), Some(&13.0));
        assert_eq!(r.shares.get("trainer"), Some(&0.0));
        assert!(!r.shares.contains_key("tools"));
        assert_eq!(r.set_gain, Some(36.0), "from the start and end exams");
        assert_eq!(r.set_shares.get("memory"), Some(&26.0));
    }

    #[test]
    fn a_bad_curriculum_or_loop_is_refused_naming_the_line() {
        let args = |c: &str, ablate: Option<&str>| LifeRunArgs {
            curriculum: c.into(),
            exam: String::new(),
            every: 2,
            for_s: None,
            limit: Some(1),
            ablate: ablate.map(str::to_string),
            approve_amendments: false,
            name: None,
        };
        let e = args("{\"text\": \"a\"}\n{\"txt\": \"b\"}", None)
            .validate()
            .unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = args("{\"text\": \"a\"}", Some("dreams"))
            .validate()
            .unwrap_err();
        assert!(e.contains("memory, tools, trainer, motivator"), "{e}");
        let ok = args(
            "{\"text\": \"a\"}\n# c\n{\"text\": \"b\", \"kind\": \"fact\"}",
            None,
        )
        .validate()
        .unwrap();
        assert_eq!(ok.len(), 1, "limit keeps the first");
    }
}
