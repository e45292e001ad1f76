//! `batos exam run|history|show|plot|cancel`: the exam from the command line — a run followed with a
//! progress bar to its per-category table, the history of runs, one run's answers, and the history drawn
//! as a chart.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use batos_protocol::exam::{parse_set, table, ExamResult, ExamSummary};
use batos_protocol::Event;
use serde_json::json;

use crate::client::{Client, ClientConfig, ClientError};

/// What `batos exam` does.
#[derive(clap::Subcommand, Clone)]
pub enum ExamAction {
    /// Ask every question of a set (a JSON-lines file; config/exam/questions.jsonl ships) through the
    /// household, with a progress bar, and print the per-category table at the end. The run goes on in the
    /// daemon if this command is interrupted.
    Run {
        /// The question set.
        file: PathBuf,
        /// `bare`: ask the bare model the same questions in the same run, side by side (the floor).
        #[arg(long, default_value = "none")]
        baseline: String,
        /// A label for the history (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        /// Do not ask the Curator's judge to score each answer (faster; no agreement figure).
        #[arg(long)]
        no_judge: bool,
        /// Only the questions of this category (repeatable).
        #[arg(long = "category")]
        categories: Vec<String>,
        /// Print the whole result as JSON at the end instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Every kept run: when, what, and its score per category.
    History {
        /// Print the raw JSON reply.
        #[arg(long)]
        json: bool,
    },
    /// One run: its table and every question's answers.
    Show {
        /// The run's id (a unique prefix is enough).
        id: String,
        /// Print the raw JSON result.
        #[arg(long)]
        json: bool,
    },
    /// Draw the history as an SVG chart: each category's score (society) over the runs, and both overall
    /// scores (society, bare model).
    Plot {
        /// Where to write the chart (`.svg`).
        file: PathBuf,
        /// Only runs with this label (`--name` of `exam run`).
        #[arg(long)]
        name: Option<String>,
    },
    /// Stop the running exam (what was answered is kept and scored).
    Cancel {
        /// The run's id (a unique prefix is enough).
        id: String,
    },
}

fn fail(e: ClientError) -> ExitCode {
    eprintln!("batos: {e}");
    ExitCode::from(1)
}

/// Runs one `batos exam` action.
pub async fn exam(cfg: ClientConfig, action: ExamAction) -> ExitCode {
    match action {
        ExamAction::Run {
            file,
            baseline,
            name,
            no_judge,
            categories,
            json,
        } => run(cfg, &file, baseline, name, no_judge, categories, json).await,
        ExamAction::History { json } => history(cfg, json).await,
        ExamAction::Show { id, json } => show(cfg, &id, json).await,
        ExamAction::Plot { file, name } => plot_cmd(cfg, &file, name.as_deref()).await,
        ExamAction::Cancel { id } => cancel(cfg, &id).await,
    }
}

async fn summaries(c: &mut Client) -> Result<Vec<ExamSummary>, ClientError> {
    let v = c.request("exam_history", json!({})).await?;
    serde_json::from_value(v["exams"].clone())
        .map_err(|e| ClientError::Protocol(format!("exam_history answered oddly: {e}")))
}

/// The full id of the run whose id starts with `prefix` (unique), asking the history.
async fn resolve(c: &mut Client, prefix: &str) -> Result<String, ExitCode> {
    let all = summaries(c).await.map_err(fail)?;
    by_prefix(
        all.iter().map(|s| s.id.as_str()),
        prefix,
        "exam run",
        "batos exam history",
    )
}

/// The one id of `ids` that starts with `prefix`; otherwise says so (naming `what` and the command `list`
/// that lists them) and answers the exit code: 1 for none, 2 for several.
pub fn by_prefix<'a>(
    ids: impl Iterator<Item = &'a str>,
    prefix: &str,
    what: &str,
    list: &str,
) -> Result<String, ExitCode> {
    let hits: Vec<&str> = ids.filter(|id| id.starts_with(prefix)).collect();
    match hits.as_slice() {
        [one] => Ok(one.to_string()),
        [] => {
            eprintln!("batos: no {what} with an id starting {prefix:?} ({list} lists them)");
            Err(ExitCode::from(1))
        }
        _ => {
            eprintln!(
                "batos: {} {what} ids start with {prefix:?}; give more of it",
                hits.len()
            );
            Err(ExitCode::from(2))
        }
    }
}

fn bar(done: u32, total: u32) -> String {
    const WIDTH: u32 = 24;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(0);
    format!(
        "[{}{}]",
        "#".repeat(filled as usize),
        ".".repeat((WIDTH - filled) as usize)
    )
}

/// One progress line for an `exam.progress` event of run `id`.
fn progress_line(ev: &Event, id: &str) -> Option<String> {
    let Event::ExamProgress {
        exam,
        phase,
        done,
        total,
        question,
        category,
        pass,
        bare_pass,
        ms,
    } = ev
    else {
        return None;
    };
    if exam != id {
        return None;
    }
    let mark = |p: bool| if p { "right" } else { "wrong" };
    let what = if phase == "teach" {
        format!(
            "taught for {question}: {}",
            if *pass {
                "remembered"
            } else {
                "NOT remembered"
            }
        )
    } else {
        format!(
            "{question} ({category}): society {}{}",
            mark(*pass),
            bare_pass
                .map(|b| format!(", bare {}", mark(b)))
                .unwrap_or_default()
        )
    };
    Some(format!(
        "{} {phase:<8} {done:>3}/{total:<3} {what}  {:.1} s",
        bar(*done, *total),
        *ms as f64 / 1000.0
    ))
}

#[allow(clippy::too_many_arguments)]
async fn run(
    cfg: ClientConfig,
    file: &Path,
    baseline: String,
    name: Option<String>,
    no_judge: bool,
    categories: Vec<String>,
    raw: bool,
) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("batos: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    // The daemon checks again; checking here names the file's mistake before anything runs.
    if let Err(e) = parse_set(&text) {
        eprintln!("batos: {}: {e}", file.display());
        return ExitCode::from(2);
    }
    let name = name.unwrap_or_else(|| {
        file.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "exam".into())
    });
    use zeromq::prelude::*;
    let (mut sub, subscribed) = crate::client::subscriber_or_polling(&cfg, &["exam."]).await;
    let poll = cfg.poll;
    let mut c = Client::new(cfg);
    let mut args = json!({"set": text, "name": name, "baseline": baseline, "judge": !no_judge});
    if !categories.is_empty() {
        args["categories"] = json!(categories);
    }
    let started: ExamSummary = match c.request_as("exam_run", args).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let id = started.id.clone();
    eprintln!(
        "exam {id} started: {} question(s){}; it goes on in the daemon if you stop this command \
         (batos exam cancel {})",
        started.total,
        if started.baseline {
            ", with the bare model beside"
        } else {
            ""
        },
        &id[..8]
    );
    let tty = std::io::stderr().is_terminal();
    let mut ticker = tokio::time::interval(poll);
    ticker.tick().await;
    loop {
        tokio::select! {
            m = sub.recv(), if subscribed => {
                let Some(ev) = m.ok().and_then(crate::client::event_body) else { continue };
                if let Some(line) = Event::from_body(&ev).and_then(|e| progress_line(&e, &id)) {
                    if tty {
                        eprint!("\r\x1b[2K{line}");
                    } else {
                        eprintln!("{line}");
                    }
                    let _ = std::io::stderr().flush();
                }
            }
            _ = ticker.tick() => {
                let r: ExamResult = match c.request_as("exam_get", json!({"id": id})).await {
                    Ok(r) => r,
                    Err(e) => return fail(e),
                };
                if r.summary.status == "running" {
                    continue;
                }
                if tty {
                    eprintln!();
                }
                if raw {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                } else {
                    println!("exam {} ({}): {}", r.summary.id, r.summary.name, r.summary.status);
                    print!("{}", table(&r.summary));
                }
                if let Some(e) = &r.error {
                    eprintln!("batos: the exam failed: {e}");
                }
                return if r.summary.status == "done" { ExitCode::SUCCESS } else { ExitCode::from(1) };
            }
        }
    }
}

fn date(unix: f64) -> String {
    // Days since the epoch → civil date (Howard Hinnant's algorithm), UTC, to the minute.
    let secs = unix.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

async fn history(cfg: ClientConfig, raw: bool) -> ExitCode {
    let mut c = Client::new(cfg);
    let all = match summaries(&mut c).await {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    if raw {
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    if all.is_empty() {
        println!("no exam run yet (batos exam run config/exam/questions.jsonl --baseline bare)");
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<8} {:<16} {:<20} {:<9} {:>7} {:>8} {:>6} {:>5}  per category (society/bare %)",
        "id", "started (UTC)", "name", "status", "done", "society", "bare", "leaks"
    );
    for s in &all {
        let cats: Vec<String> = s
            .categories
            .iter()
            .map(|c| match c.bare_pct() {
                Some(b) => format!("{} {:.0}/{:.0}", c.category, c.society_pct(), b),
                None => format!("{} {:.0}", c.category, c.society_pct()),
            })
            .collect();
        println!(
            "{:<8} {:<16} {:<20} {:<9} {:>3}/{:<3} {:>7.0}% {:>6} {:>5}  {}",
            &s.id[..8.min(s.id.len())],
            date(s.started_at),
            batos_protocol::truncate(&s.name, 20),
            s.status,
            s.done,
            s.total,
            s.society_pct,
            s.bare_pct
                .map(|b| format!("{b:.0}%"))
                .unwrap_or_else(|| "-".into()),
            s.leaks,
            cats.join("  ")
        );
    }
    ExitCode::SUCCESS
}

async fn show(cfg: ClientConfig, prefix: &str, raw: bool) -> ExitCode {
    let mut c = Client::new(cfg);
    let id = match resolve(&mut c, prefix).await {
        Ok(id) => id,
        Err(code) => return code,
    };
    let v = match c.request("exam_get", json!({"id": id})).await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if raw {
        println!("{v}");
        return ExitCode::SUCCESS;
    }
    let r: ExamResult = match serde_json::from_value(v) {
        Ok(r) => r,
        Err(e) => {
            return fail(ClientError::Protocol(format!(
                "exam_get answered oddly: {e}"
            )))
        }
    };
    println!(
        "exam {} ({}), {} — started {}",
        r.summary.id,
        r.summary.name,
        r.summary.status,
        date(r.summary.started_at)
    );
    print!("{}", table(&r.summary));
    for t in &r.taught {
        println!(
            "taught for {}: {}{}",
            t.question,
            if t.remembered {
                "remembered"
            } else {
                "NOT remembered"
            },
            t.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    let one_line = |s: &str| batos_protocol::truncate(&s.replace('\n', " "), 100).to_string();
    for q in &r.results {
        let mark = |p: bool| if p { "✓" } else { "✗" };
        println!(
            "{} {:<12} society {} {}{}",
            mark(q.society.pass),
            q.id,
            one_line(&q.society.answer),
            q.society
                .error
                .as_deref()
                .map(|e| format!("[{e}]"))
                .unwrap_or_default(),
            if q.society.leaks.is_empty() {
                String::new()
            } else {
                format!(" [leaks: {}]", q.society.leaks.join(", "))
            }
        );
        if let Some(b) = &q.bare {
            println!(
                "{} {:<12} bare    {}",
                mark(b.pass),
                "",
                one_line(&b.answer)
            );
        }
    }
    ExitCode::SUCCESS
}

async fn cancel(cfg: ClientConfig, prefix: &str) -> ExitCode {
    let mut c = Client::new(cfg);
    let id = match resolve(&mut c, prefix).await {
        Ok(id) => id,
        Err(code) => return code,
    };
    match c.request("exam_cancel", json!({"id": id})).await {
        Ok(v) => {
            let s: ExamSummary = serde_json::from_value(v).unwrap_or_default();
            println!(
                "exam {} cancelled after {} of {} question(s)",
                s.id, s.done, s.total
            );
            print!("{}", table(&s));
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

async fn plot_cmd(cfg: ClientConfig, file: &Path, name: Option<&str>) -> ExitCode {
    let mut c = Client::new(cfg);
    let all = match summaries(&mut c).await {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let runs: Vec<ExamSummary> = all
        .into_iter()
        .filter(|s| s.status == "done" && s.done > 0)
        .filter(|s| name.is_none_or(|n| s.name == n))
        .collect();
    match crate::exam_plot::draw(&runs, file) {
        Ok(()) => {
            println!("{} run(s) drawn into {}", runs.len(), file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("batos: {e}");
            ExitCode::from(if runs.is_empty() { 1 } else { 2 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(date(0.0), "1970-01-01 00:00");
        assert_eq!(date(951_782_400.0), "2000-02-29 00:00");
        assert_eq!(date(1_796_400_000.0 + 3_600.0 * 5.5), "2026-12-04 21:30");
    }

    #[test]
    fn a_progress_line_shows_both_answers_and_ignores_other_runs() {
        let ev = Event::ExamProgress {
            exam: "e1".into(),
            phase: "question".into(),
            done: 6,
            total: 24,
            question: "fact-06".into(),
            category: "fact".into(),
            pass: true,
            bare_pass: Some(false),
            ms: 2500,
        };
        let line = progress_line(&ev, "e1").unwrap();
        assert!(line.starts_with("[######..................]"), "{line}");
        assert!(
            line.contains("fact-06 (fact): society right, bare wrong  2.5 s"),
            "{line}"
        );
        assert!(progress_line(&ev, "e2").is_none());
    }
}
