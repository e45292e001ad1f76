//! `batos life run|list|show|cancel|report`: an unattended life from the command line — started and followed
//! to its end (each task and each exam a line), the lives kept, one life's record, and the report that sets
//! lives side by side (JSON, a table, and the curves as an SVG chart).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use batos_protocol::exam::parse_set;
use batos_protocol::life::{parse_curriculum, report, LifeRecord, LifeReport, LifeSummary};
use batos_protocol::Event;
use plotters::prelude::*;
use serde_json::json;

use crate::client::{Client, ClientConfig, ClientError};

/// What `batos life` does.
#[derive(clap::Subcommand, Clone)]
pub enum LifeAction {
    /// Start a life: the curriculum's tasks sent one by one at a steady pace while every loop runs, the full
    /// exam at both ends (beside the bare model at the start) and its held-out subset every N tasks. Follows
    /// it to its end; it goes on in the daemon if this command is interrupted, and resumes after a restart.
    Run {
        /// The curriculum (JSON lines of {"text": …}; config/life/curriculum.jsonl ships).
        #[arg(long)]
        curriculum: PathBuf,
        /// The exam set (config/exam/questions.jsonl ships).
        #[arg(long)]
        exam: PathBuf,
        /// A check (the held-out subset) after every N tasks.
        #[arg(long, default_value_t = 15)]
        every: u32,
        /// Stop sending tasks after this long (`90m`, `1h`, `3600s`); the end exam still runs.
        #[arg(long = "for")]
        for_: Option<String>,
        /// Only the first N curriculum tasks.
        #[arg(long)]
        limit: Option<u32>,
        /// Switch one loop off for the whole life: memory, tools, trainer or motivator.
        #[arg(long)]
        ablate: Option<String>,
        /// The experiment's amendment policy: approve the household's own codex amendments instead of
        /// leaving their tasks paused for a human (recorded in the life's activity).
        #[arg(long)]
        approve_amendments: bool,
        /// A label for the list and the report.
        #[arg(long)]
        name: Option<String>,
        /// Start it and return at once.
        #[arg(long)]
        detach: bool,
    },
    /// Every kept life.
    List,
    /// One life's record as JSON.
    Show {
        /// The life's id (a unique prefix is enough).
        id: String,
    },
    /// Stop the running life (its switches are put back; no end exam).
    Cancel {
        /// The life's id (a unique prefix is enough).
        id: String,
    },
    /// Set lives side by side: each curve's start and end per category, each loop's share of the full
    /// life's gain (full minus ablated), the noise between repeated full lives, and what each loop did and cost.
    Report {
        /// Lives to include (unique id prefixes); none: every finished life.
        ids: Vec<String>,
        /// Also draw the curves as an SVG chart here.
        #[arg(long)]
        chart: Option<PathBuf>,
        /// Print the report as JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

fn fail(e: ClientError) -> ExitCode {
    eprintln!("batos: {e}");
    ExitCode::from(1)
}

/// `90m`, `1h`, `3600s`, `3600` → seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('s') => (&s[..s.len() - 1], 1),
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| n * mult)
        .ok_or_else(|| format!("`{s}` is not a duration (e.g. 90m, 1h, 3600s)"))
}

fn read(path: &Path) -> Result<String, ExitCode> {
    std::fs::read_to_string(path).map_err(|e| {
        eprintln!("batos: cannot read {}: {e}", path.display());
        ExitCode::from(2)
    })
}

/// Runs one `batos life` action.
pub async fn life(cfg: ClientConfig, action: LifeAction) -> ExitCode {
    match action {
        LifeAction::Run {
            curriculum,
            exam,
            every,
            for_,
            limit,
            ablate,
            approve_amendments,
            name,
            detach,
        } => {
            let (c, e) = match (read(&curriculum), read(&exam)) {
                (Ok(c), Ok(e)) => (c, e),
                (Err(x), _) | (_, Err(x)) => return x,
            };
            if let Err(why) = parse_curriculum(&c) {
                eprintln!("batos: {}: {why}", curriculum.display());
                return ExitCode::from(2);
            }
            if let Err(why) = parse_set(&e) {
                eprintln!("batos: {}: {why}", exam.display());
                return ExitCode::from(2);
            }
            let for_s = match for_.as_deref().map(parse_duration).transpose() {
                Ok(x) => x,
                Err(why) => {
                    eprintln!("batos: --for: {why}");
                    return ExitCode::from(2);
                }
            };
            let args = json!({
                "curriculum": c, "exam": e, "every": every, "for_s": for_s, "limit": limit,
                "ablate": ablate, "approve_amendments": approve_amendments, "name": name,
            });
            run(cfg, args, detach).await
        }
        LifeAction::List => list(cfg).await,
        LifeAction::Show { id } => {
            let mut c = Client::new(cfg);
            let id = match resolve(&mut c, &id).await {
                Ok(id) => id,
                Err(x) => return x,
            };
            match c.request("life_get", json!({ "id": id })).await {
                Ok(v) => {
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        LifeAction::Cancel { id } => {
            let mut c = Client::new(cfg);
            let id = match resolve(&mut c, &id).await {
                Ok(id) => id,
                Err(x) => return x,
            };
            match c.request("life_cancel", json!({ "id": id })).await {
                Ok(v) => {
                    println!("life {id}: {}", v["status"].as_str().unwrap_or("?"));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        LifeAction::Report { ids, chart, json } => report_cmd(cfg, ids, chart, json).await,
    }
}

async fn summaries(c: &mut Client) -> Result<Vec<LifeSummary>, ClientError> {
    let v = c.request("life_list", json!({})).await?;
    serde_json::from_value(v["lives"].clone())
        .map_err(|e| ClientError::Protocol(format!("life_list answered oddly: {e}")))
}

async fn resolve(c: &mut Client, prefix: &str) -> Result<String, ExitCode> {
    let all = summaries(c).await.map_err(fail)?;
    crate::exam_cli::by_prefix(
        all.iter().map(|s| s.id.as_str()),
        prefix,
        "life",
        "batos life list",
    )
}

fn line(ev: &Event, id: &str) -> Option<String> {
    match ev {
        Event::LifeProgress {
            life,
            done,
            total,
            task,
            status,
        } if life == id => Some(format!(
            "task {done:>3}/{total:<3} {status:<9} {}",
            task.as_deref().unwrap_or("-")
        )),
        Event::LifeExam {
            life,
            phase,
            at_task,
            check_pct,
            pct,
            exam,
        } if life == id => Some(format!(
            "exam  {phase:<5} after {at_task:>3} task(s): held-out {check_pct:.1} % right ({pct:.1} % of the questions asked; batos exam show {})",
            &exam[..8.min(exam.len())]
        )),
        Event::LifeRolledBack {
            life,
            before,
            after,
            undone,
        } if life == id => Some(format!(
            "rolled back: the check fell from {before:.1} % to {after:.1} %; undone: {}",
            if undone.is_empty() { "nothing a life can undo".to_string() } else { undone.join(", ") }
        )),
        Event::ModelTuned { persona, model, exam_before, exam_after, .. } => Some(format!(
            "trainer: {persona} tuned to {model} (exam gate {} → {})",
            exam_before.map(|x| format!("{x:.1} %")).unwrap_or("-".into()),
            exam_after.map(|x| format!("{x:.1} %")).unwrap_or("-".into()),
        )),
        Event::TrainerRejected { persona, reason, .. } => Some(format!("trainer: {persona}'s adapter refused: {reason}")),
        Event::ToolCreated { name, .. } => Some(format!("toolforge: made {name}")),
        Event::ToolRetired { name, reason } => Some(format!("tool {name} retired: {reason}")),
        _ => None,
    }
}

async fn run(cfg: ClientConfig, args: serde_json::Value, detach: bool) -> ExitCode {
    use zeromq::prelude::*;
    let (mut sub, subscribed) = crate::client::subscriber_or_polling(
        &cfg,
        &["life.", "model.tuned", "trainer.rejected", "tool."],
    )
    .await;
    let poll = cfg.poll;
    let mut c = Client::new(cfg);
    let started: LifeSummary = match c.request_as("life_run", args).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let id = started.id.clone();
    eprintln!(
        "life {id} started: {} task(s){}; it goes on in the daemon if you stop this command (batos life cancel {})",
        started.total,
        started.ablate.as_deref().map(|a| format!(", without {a}")).unwrap_or_default(),
        &id[..8]
    );
    if detach {
        println!("{id}");
        return ExitCode::SUCCESS;
    }
    let mut ticker = tokio::time::interval(poll.max(std::time::Duration::from_secs(1)));
    ticker.tick().await;
    loop {
        tokio::select! {
            m = sub.recv(), if subscribed => {
                let Some(ev) = m.ok().and_then(crate::client::event_body) else { continue };
                if let Some(l) = Event::from_body(&ev).and_then(|e| line(&e, &id)) {
                    eprintln!("{l}");
                }
            }
            _ = ticker.tick() => {
                let rec: LifeRecord = match c.request_as("life_get", json!({"id": id})).await {
                    Ok(r) => r,
                    Err(e) => return fail(e),
                };
                if rec.summary.status == "running" {
                    continue;
                }
                print!("{}", tables(&report(std::slice::from_ref(&rec))));
                if let Some(e) = &rec.summary.error {
                    eprintln!("batos: the life failed: {e}");
                }
                return if rec.summary.status == "done" { ExitCode::SUCCESS } else { ExitCode::from(1) };
            }
        }
    }
}

async fn list(cfg: ClientConfig) -> ExitCode {
    let mut c = Client::new(cfg);
    let all = match summaries(&mut c).await {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    if all.is_empty() {
        println!("no life yet (batos life run starts one)");
    }
    for s in all {
        let pct = |x: Option<f64>| x.map(|p| format!("{p:.1} %")).unwrap_or("-".into());
        println!(
            "{}  {:<10} {:<16} {:>3}/{:<3} tasks  held-out {} → {}  {}",
            &s.id[..8],
            s.status,
            format!(
                "{}{}",
                s.name,
                s.ablate
                    .as_deref()
                    .map(|a| format!(" -{a}"))
                    .unwrap_or_default()
            ),
            s.done,
            s.total,
            pct(s.start_pct),
            pct(s.latest_pct),
            s.error.unwrap_or_default()
        );
    }
    ExitCode::SUCCESS
}

async fn report_cmd(
    cfg: ClientConfig,
    ids: Vec<String>,
    chart: Option<PathBuf>,
    raw: bool,
) -> ExitCode {
    let mut c = Client::new(cfg);
    let chosen: Vec<String> = if ids.is_empty() {
        match summaries(&mut c).await {
            Ok(all) => all
                .into_iter()
                .filter(|s| s.status != "running")
                .map(|s| s.id)
                .collect(),
            Err(e) => return fail(e),
        }
    } else {
        let mut out = Vec::new();
        for p in &ids {
            match resolve(&mut c, p).await {
                Ok(id) => out.push(id),
                Err(x) => return x,
            }
        }
        out
    };
    let mut records = Vec::new();
    for id in chosen {
        match c
            .request_as::<LifeRecord>("life_get", json!({ "id": id }))
            .await
        {
            Ok(r) => records.push(r),
            Err(e) => return fail(e),
        }
    }
    let r = report(&records);
    if raw {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        print!("{}", tables(&r));
    }
    if let Some(file) = chart {
        if let Err(e) = draw(&r, &file) {
            eprintln!("batos: {e}");
            return ExitCode::from(1);
        }
        eprintln!("chart written to {}", file.display());
    }
    ExitCode::SUCCESS
}

/// The report as text: one row per life (its curve's ends and per-category start → end), then each loop's
/// share, then what the loops did and cost.
pub fn tables(r: &LifeReport) -> String {
    let mut out = String::new();
    out.push_str(
        "life                         held-out start → end (gain)   per category (start → end)\n",
    );
    for l in &r.lives {
        let label = format!(
            "{} {}{}",
            &l.id[..8.min(l.id.len())],
            l.name,
            l.ablate
                .as_deref()
                .map(|a| format!(" -{a}"))
                .unwrap_or_default()
        );
        let cats: Vec<String> = l
            .categories
            .iter()
            .map(|(c, (s, e))| format!("{c} {s:.0}→{e:.0}"))
            .collect();
        out.push_str(&format!(
            "{label:<28} {:>5.1} → {:>5.1} ({:+.1})        {}\n",
            l.start,
            l.end,
            l.gain,
            cats.join(", ")
        ));
    }
    if let Some(g) = r.full_gain {
        out.push_str(&format!(
            "full household's gain: {g:+.1} points (noise between full lives: {})\n",
            r.noise.map(|n| format!("{n:.1}")).unwrap_or("-".into())
        ));
    }
    for (l, s) in &r.shares {
        let set = r
            .set_shares
            .get(l)
            .map(|x| format!("; full set {x:+.1}"))
            .unwrap_or_default();
        out.push_str(&format!("share of {l:<9}: {s:+.1} points held-out{set}\n"));
    }
    if let Some(g) = r.set_gain {
        out.push_str(&format!(
            "full set: the full household's gain {g:+.1} points (noise {})\n",
            r.set_noise.map(|n| format!("{n:.1}")).unwrap_or("-".into())
        ));
    }
    out.push_str("life       memory tools  accepted/rejected triggers(delivered) tuned/refused/failed steps goals  tasks s  exams s  quiet s (trainer s)  cpu s\n");
    for l in &r.lives {
        let (a, c) = (&l.activity, &l.cost);
        out.push_str(&format!(
            "{:<10} {:>6} {:>2}/{:<2}  {:>8}/{:<8} {:>8}({})        {}/{}/{}   {:>5} {:>5}  {:>7.0}  {:>7.0}  {:>7.0} ({:.0})  {:.0}\n",
            &l.id[..8.min(l.id.len())],
            a.memory_updates,
            a.tools_created,
            a.tools_retired,
            a.curator_accepted,
            a.curator_rejected,
            a.triggers,
            a.triggers_delivered,
            a.tuned,
            a.forge_rejected,
            a.forge_failed,
            a.forge_steps,
            a.goals,
            c.tasks_s,
            c.exams_s,
            c.quiet_s,
            c.trainer_s,
            c.tasks_cpu_s + c.exams_cpu_s + c.quiet_cpu_s
        ));
    }
    out
}

/// Draws each life's curve (held-out share right over tasks done) into `file` (`.svg`).
pub fn draw(r: &LifeReport, file: &Path) -> Result<(), String> {
    if r.lives.is_empty() {
        return Err("no life with a scored exam to draw (batos life list lists them)".into());
    }
    let x_max = r
        .lives
        .iter()
        .flat_map(|l| l.curve.iter().map(|p| p.0))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    crate::exam_plot::svg(file, |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(
                "batos life: held-out exam share right over the curriculum",
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..x_max, 0f64..100f64)?;
        chart
            .configure_mesh()
            .x_desc("curriculum tasks done")
            .y_desc("% right (held-out subset)")
            .draw()?;
        let series = r
            .lives
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let style = match l.ablate {
                    None => BLUE.mix(1.0 - 0.3 * (i % 2) as f64).stroke_width(3),
                    Some(_) => Palette99::pick(i + 2).stroke_width(2),
                };
                let label = format!(
                    "{} {}",
                    &l.id[..8.min(l.id.len())],
                    l.ablate
                        .as_deref()
                        .map(|a| format!("without {a}"))
                        .unwrap_or("full".into())
                );
                let points = l.curve.iter().map(|(x, y)| (f64::from(*x), *y)).collect();
                (label, points, style)
            })
            .collect();
        crate::exam_plot::lines(&mut chart, series)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(
        id: &str,
        ablate: Option<&str>,
        curve: Vec<(u32, f64)>,
    ) -> batos_protocol::life::ReportLife {
        batos_protocol::life::ReportLife {
            id: id.into(),
            name: id.into(),
            ablate: ablate.map(String::from),
            start: curve.first().map_or(0.0, |p| p.1),
            end: curve.last().map_or(0.0, |p| p.1),
            gain: 0.0,
            curve,
            set_start: None,
            set_end: None,
            categories: Default::default(),
            activity: Default::default(),
            cost: Default::default(),
        }
    }

    #[test]
    fn lives_are_drawn_as_svg_each_curve_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("life.svg");
        let mut r = LifeReport {
            lives: vec![
                life("aaaaaaaaaaaa", None, vec![(0, 40.0), (8, 55.0), (16, 60.0)]),
                life("bbbbbbbbbbbb", Some("memory"), vec![(0, 40.0), (16, 42.0)]),
            ],
            full_gain: None,
            noise: None,
            shares: Default::default(),
            set_gain: None,
            set_noise: None,
            set_shares: Default::default(),
        };
        draw(&r, &file).unwrap();
        let svg = std::fs::read_to_string(&file).unwrap();
        assert!(svg.starts_with("<svg"));
        for label in [
            "aaaaaaaa full",
            "bbbbbbbb without memory",
            "curriculum tasks done",
        ] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert!(draw(&r, &dir.path().join("x.png"))
            .unwrap_err()
            .contains(".svg"));
        r.lives.clear();
        assert!(draw(&r, &file).unwrap_err().contains("no life"));
    }

    #[test]
    fn durations_read_as_a_person_writes_them() {
        assert_eq!(parse_duration("90m"), Ok(5400));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("45s"), Ok(45));
        assert_eq!(parse_duration("120"), Ok(120));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0m").is_err());
    }
}
