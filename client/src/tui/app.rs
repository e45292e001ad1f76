//! The TUI's state: what the daemon told it (the event fold, command replies) and what the person is doing
//! (screen, selection, input). Pure: no terminal, no sockets, no clock — so every screen renders from a
//! constructed `App` in the snapshot tests exactly as it does live.

use std::collections::{BTreeMap, VecDeque};

use batos_protocol::{Event, EventBody, StateView, TaskStatus};
use serde_json::{json, Value};

// The rows each list screen shows, read from the replies kept here, are in rows.rs (one `impl App`).

/// Events kept in the log screen.
pub const LOG_LINES: usize = 500;
/// Dissonance readings kept per persona (the sparkline's width).
pub const DISSONANCE_POINTS: usize = 40;
/// Characters of streamed text kept per persona.
pub const STREAM_CHARS: usize = 600;
/// Ticks (of `tui.tick_ms`-ish, 250 ms) a flash lasts.
pub const FLASH_TICKS: u8 = 8;
/// The four personas, in panel order.
pub const PERSONAS: [&str; 4] = ["ALFRED", "BABS", "BRICK", "ROBIN"];

/// The screens, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// Four persona panels.
    Society,
    /// The task table and a detail pane.
    Tasks,
    /// The tool registry.
    Tools,
    /// Pending and decided amendments.
    Codex,
    /// One persona's live settings.
    Inspector,
    /// The supervision tree.
    Supervision,
    /// Training and datasets.
    Trainer,
    /// Every event with its sequence number.
    Events,
    /// The exam: a run's progress, the history of runs per category.
    Exam,
}

impl Screen {
    /// Every screen, in tab order.
    pub const ALL: [Screen; 9] = [
        Screen::Society,
        Screen::Tasks,
        Screen::Tools,
        Screen::Codex,
        Screen::Inspector,
        Screen::Supervision,
        Screen::Trainer,
        Screen::Events,
        Screen::Exam,
    ];

    /// Its tab title.
    pub fn title(self) -> &'static str {
        match self {
            Screen::Society => "Society",
            Screen::Tasks => "Tasks",
            Screen::Tools => "Tools",
            Screen::Codex => "Codex",
            Screen::Inspector => "Inspector",
            Screen::Supervision => "Supervision",
            Screen::Trainer => "Trainer",
            Screen::Events => "Events",
            Screen::Exam => "Exam",
        }
    }

    pub(super) fn index(self) -> usize {
        Screen::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }
}

/// A command to send, and where its reply goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Req {
    /// Protocol command.
    pub cmd: String,
    /// Its arguments.
    pub args: Value,
    /// What the reply updates.
    pub then: Then,
}

/// Where a reply goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Then {
    /// `status`: the tree and counts.
    Status,
    /// `list_tasks`.
    Tasks,
    /// `get_task` of the selected task.
    TaskDetail,
    /// `list_tools`.
    Tools,
    /// `list_amendments`.
    Amendments,
    /// `get_persona` for the Inspector.
    Persona,
    /// `trainer_status`.
    Trainer,
    /// `curator_stats`.
    Curator,
    /// `exam_history`.
    Exams,
    /// A person's action: its outcome is shown in the footer, then the screens refresh.
    Done(String),
}

/// What the keyboard is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Keys are shortcuts.
    Normal,
    /// The `:` command line.
    Command(String),
    /// The `/` filter being typed.
    Filter(String),
    /// A line of input for a purpose (`submit`, `edit BRICK`, `call echo`).
    Input {
        /// What the line is for, shown as its prompt.
        purpose: String,
        /// Typed so far.
        text: String,
    },
    /// A destructive action waiting for `y`.
    Confirm {
        /// The question.
        prompt: String,
        /// What `y` sends.
        req: Req,
    },
    /// The key map.
    Help,
}

/// One persona as the panels show it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PersonaLive {
    /// The task it is thinking for, if streaming.
    pub thinking: Option<String>,
    /// The text it streamed last (the tail).
    pub stream: String,
    /// Dissonance readings of its steps (ROBIN's critiques), newest last.
    pub dissonance: VecDeque<f64>,
    /// Steps it finished.
    pub steps: u64,
}

/// A running exam as its progress events tell it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExamLive {
    /// The run's id.
    pub id: String,
    /// `teach` or `question`.
    pub phase: String,
    /// Steps of the phase done, and in all.
    pub done: u32,
    /// Steps of the phase in all.
    pub total: u32,
    /// The last question answered, and how.
    pub last: String,
    /// The society's right answers seen in this session.
    pub right: u32,
    /// The bare model's.
    pub bare_right: u32,
    /// Questions seen in this session.
    pub seen: u32,
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// Its seq (0 for a resync marker).
    pub seq: u64,
    /// The event kind, or `resync` / `disconnected`.
    pub kind: String,
    /// Its data, short.
    pub text: String,
}

/// Everything the TUI shows.
#[derive(Debug, Clone)]
pub struct App {
    /// `--readonly`: nothing is changed.
    pub readonly: bool,
    /// The screen shown.
    pub screen: Screen,
    /// The daemon's state, followed by snapshot + events (protocol §11).
    pub state: StateView,
    /// The last applied seq.
    pub seq: u64,
    /// False from a missed heartbeat (3 periods) until traffic returns: the overlay shows.
    pub connected: bool,
    /// Resyncs so far (gaps recovered).
    pub resyncs: u64,
    /// Per persona.
    pub personas: BTreeMap<String, PersonaLive>,
    /// Task texts and origins from `task.submitted` and `list_tasks`.
    pub task_text: BTreeMap<String, (String, String)>,
    /// Replies kept for the screens.
    pub replies: BTreeMap<&'static str, Value>,
    /// The last training progress (`trainer.progress`).
    pub progress: Option<Value>,
    /// The last gate verdict (`model.tuned` or `trainer.rejected`), with its kind.
    pub verdict: Option<(String, Value)>,
    /// The running exam's last `exam.progress`, with its right answers so far (society, bare); `None`
    /// once it is scored.
    pub exam: Option<ExamLive>,
    /// The event log, newest last.
    pub log: VecDeque<LogLine>,
    /// Things that flash (a new tool, a restarted actor) and the ticks left.
    pub flash: BTreeMap<String, u8>,
    /// Selected row per screen.
    pub selected: [usize; 9],
    /// The Inspector's persona.
    pub inspected: usize,
    /// The `/` filter applied to lists.
    pub filter: String,
    /// What the keyboard does.
    pub mode: Mode,
    /// The footer's message (a command's outcome, a refusal and its reason).
    pub message: Option<String>,
    /// Ticks since start (animation).
    pub ticks: u64,
    /// Unix seconds now, set by the loop at each tick (tasks' ages); `None` until the first.
    pub now: Option<f64>,
    /// Set by `q`.
    pub quit: bool,
}

impl App {
    /// A fresh TUI (nothing received yet: disconnected until the first snapshot).
    pub fn new(readonly: bool) -> Self {
        Self {
            readonly,
            screen: Screen::Society,
            state: StateView::default(),
            seq: 0,
            connected: false,
            resyncs: 0,
            personas: PERSONAS
                .iter()
                .map(|p| (p.to_string(), PersonaLive::default()))
                .collect(),
            task_text: BTreeMap::new(),
            replies: BTreeMap::new(),
            progress: None,
            verdict: None,
            exam: None,
            log: VecDeque::new(),
            flash: BTreeMap::new(),
            selected: [0; 9],
            inspected: 2,
            filter: String::new(),
            mode: Mode::Normal,
            message: None,
            ticks: 0,
            now: None,
            quit: false,
        }
    }

    fn push_log(&mut self, seq: u64, kind: &str, text: String) {
        self.log.push_back(LogLine {
            seq,
            kind: kind.to_string(),
            text,
        });
        while self.log.len() > LOG_LINES {
            self.log.pop_front();
        }
    }

    /// A new state from a snapshot (first, after a gap, after a restart).
    pub fn resynced(&mut self, state: StateView, seq: u64, reason: &str) {
        self.state = state;
        self.seq = seq;
        self.connected = true;
        if !self.log.is_empty() {
            self.resyncs += 1;
        }
        self.push_log(
            0,
            "resync",
            format!("state reloaded at seq {seq}: {reason}"),
        );
    }

    /// The heartbeat stopped.
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.push_log(0, "disconnected", "no heartbeat for 3 periods".into());
    }

    /// Traffic again.
    pub fn reconnected(&mut self) {
        self.connected = true;
    }

    /// Applies one event (already in seq order: the watcher re-syncs on gaps); answers the refreshes it calls for.
    pub fn event(&mut self, body: &EventBody) -> Vec<Req> {
        // Already in the snapshot this state came from.
        if body.seq <= self.seq {
            return Vec::new();
        }
        self.seq = body.seq;
        self.connected = true;
        let typed = Event::from_body(body);
        if let Some(ev) = &typed {
            self.state.apply(ev);
        }
        if body.kind != "task.token" {
            self.push_log(
                body.seq,
                &body.kind,
                batos_protocol::truncate(&body.data.to_string(), 300).to_string(),
            );
        }
        let mut refresh = Vec::new();
        match typed {
            Some(Event::TaskToken { persona, text, id }) => {
                if let Some(p) = self.personas.get_mut(&persona) {
                    p.thinking = Some(id);
                    p.stream.push_str(&text);
                    let n = p.stream.chars().count();
                    if n > STREAM_CHARS {
                        p.stream = p.stream.chars().skip(n - STREAM_CHARS).collect();
                    }
                }
            }
            Some(Event::TaskStep {
                persona,
                dissonance,
                summary,
                ..
            }) => {
                if let Some(p) = self.personas.get_mut(&persona) {
                    p.thinking = None;
                    p.steps += 1;
                    if p.stream.is_empty() {
                        p.stream = summary;
                    }
                    if let Some(d) = dissonance {
                        p.dissonance.push_back(d);
                        while p.dissonance.len() > DISSONANCE_POINTS {
                            p.dissonance.pop_front();
                        }
                    }
                }
                refresh.push(req("list_tasks", json!({}), Then::Tasks));
            }
            Some(Event::TaskSubmitted {
                id,
                text,
                goal,
                exam,
            }) => {
                let origin = match (goal, exam) {
                    (Some(_), _) => "motivator",
                    (_, Some(_)) => "exam",
                    _ => "user",
                };
                self.task_text.insert(id, (text, origin.into()));
                refresh.push(req("list_tasks", json!({}), Then::Tasks));
            }
            Some(
                Event::TaskDone { .. } | Event::TaskFailed { .. } | Event::TaskCancelled { .. },
            ) => {
                for p in self.personas.values_mut() {
                    p.thinking = None;
                }
                refresh.push(req("list_tasks", json!({}), Then::Tasks));
            }
            Some(Event::ToolCreated { name, .. }) => {
                self.flash.insert(format!("tool:{name}"), FLASH_TICKS);
                refresh.push(req("list_tools", json!({}), Then::Tools));
            }
            Some(Event::ActorRestarted { actor, .. } | Event::ActorFailed { actor, .. }) => {
                self.flash.insert(format!("actor:{actor}"), FLASH_TICKS);
                refresh.push(req("status", json!({}), Then::Status));
            }
            Some(Event::NodeJoined { node, .. } | Event::NodeLost { node, .. }) => {
                self.flash.insert(format!("node:{node}"), FLASH_TICKS);
                refresh.push(req("status", json!({}), Then::Status));
            }
            Some(
                Event::AmendmentProposed { .. }
                | Event::AmendmentCommitted { .. }
                | Event::AmendmentRejected { .. },
            ) => {
                refresh.push(req("list_amendments", json!({}), Then::Amendments));
            }
            Some(Event::TrainerProgress { .. }) => self.progress = Some(body.data.clone()),
            Some(Event::ExamProgress {
                exam,
                phase,
                done,
                total,
                question,
                pass,
                bare_pass,
                ..
            }) => {
                let live = self.exam.get_or_insert_with(ExamLive::default);
                if live.id != exam {
                    *live = ExamLive {
                        id: exam,
                        ..Default::default()
                    };
                }
                let mark = |p: bool| if p { "right" } else { "wrong" };
                live.last = if phase == "teach" {
                    format!(
                        "taught {question}: {}",
                        if pass { "remembered" } else { "not remembered" }
                    )
                } else {
                    live.seen += 1;
                    live.right += u32::from(pass);
                    live.bare_right += u32::from(bare_pass == Some(true));
                    format!(
                        "{question}: society {}{}",
                        mark(pass),
                        bare_pass
                            .map(|b| format!(", bare {}", mark(b)))
                            .unwrap_or_default()
                    )
                };
                (live.phase, live.done, live.total) = (phase, done, total);
            }
            Some(Event::ExamScored { .. }) => {
                self.exam = None;
                refresh.push(req("exam_history", json!({}), Then::Exams));
            }
            Some(
                Event::ModelTuned { .. }
                | Event::TrainerRejected { .. }
                | Event::TrainerFailed { .. },
            ) => {
                self.verdict = Some((body.kind.clone(), body.data.clone()));
                self.progress = None;
                refresh.push(req("trainer_status", json!({}), Then::Trainer));
            }
            Some(Event::PersonaState { .. } | Event::ModelSwapped { .. }) => {
                refresh.push(req(
                    "get_persona",
                    json!({"persona": self.inspected_name()}),
                    Then::Persona,
                ));
            }
            _ => {}
        }
        refresh
    }

    /// A command's reply.
    pub fn reply(&mut self, then: &Then, result: Result<Value, String>) -> Vec<Req> {
        let key = match then {
            Then::Status => "status",
            Then::Tasks => "tasks",
            Then::TaskDetail => "task",
            Then::Tools => "tools",
            Then::Amendments => "amendments",
            Then::Persona => "persona",
            Then::Trainer => "trainer",
            Then::Curator => "curator",
            Then::Exams => "exams",
            Then::Done(what) => {
                self.message = Some(match &result {
                    Ok(_) => format!("{what}: done"),
                    Err(e) => format!("{what}: {e}"),
                });
                return self.refresh();
            }
        };
        match result {
            Ok(v) => {
                if key == "tasks" {
                    for t in v["tasks"].as_array().into_iter().flatten() {
                        if let (Some(id), Some(text)) = (t["id"].as_str(), t["text"].as_str()) {
                            let origin = if t["goal"].is_string() {
                                "motivator"
                            } else if t["exam"].is_string() {
                                "exam"
                            } else {
                                "user"
                            };
                            self.task_text
                                .insert(id.into(), (text.into(), origin.into()));
                        }
                    }
                }
                self.replies.insert(key, v);
            }
            // A refresh that failed leaves the last good reply; the overlay and the log say why.
            Err(e) => self.message = Some(format!("{key}: {e}")),
        }
        Vec::new()
    }

    /// Once per tick: animation, flashes fading.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.flash.retain(|_, n| {
            *n = n.saturating_sub(1);
            *n > 0
        });
    }

    /// What the shown screen needs from the daemon now.
    pub fn refresh(&self) -> Vec<Req> {
        let mut out = vec![req("status", json!({}), Then::Status)];
        match self.screen {
            Screen::Tasks | Screen::Society => {
                out.push(req("list_tasks", json!({}), Then::Tasks));
                if let Some(id) = self.selected_task() {
                    out.push(req("get_task", json!({"id": id}), Then::TaskDetail));
                }
            }
            Screen::Tools => out.push(req("list_tools", json!({}), Then::Tools)),
            Screen::Codex => out.push(req("list_amendments", json!({}), Then::Amendments)),
            Screen::Inspector => out.push(req(
                "get_persona",
                json!({"persona": self.inspected_name()}),
                Then::Persona,
            )),
            Screen::Trainer => {
                out.push(req("trainer_status", json!({}), Then::Trainer));
                out.push(req("curator_stats", json!({}), Then::Curator));
            }
            Screen::Exam => out.push(req("exam_history", json!({}), Then::Exams)),
            Screen::Supervision | Screen::Events => {}
        }
        out
    }

    /// The Inspector's persona.
    pub fn inspected_name(&self) -> &'static str {
        PERSONAS[self.inspected % PERSONAS.len()]
    }

    /// The selected row of the shown screen.
    pub fn sel(&self) -> usize {
        self.selected[self.screen.index()]
    }

    /// Moves the selection.
    pub fn select(&mut self, delta: i64) {
        let i = self.screen.index();
        let len = match self.screen {
            Screen::Tasks => self.task_rows().len(),
            Screen::Tools => self.tool_rows().len(),
            Screen::Codex => self.amendment_rows().len(),
            Screen::Events => self.log.len(),
            Screen::Exam => self.exam_rows().len(),
            _ => 0,
        };
        let cur = self.selected[i] as i64;
        self.selected[i] = (cur + delta).clamp(0, len.saturating_sub(1) as i64) as usize;
    }

    /// Switches to the next (`+1`) or previous (`-1`) screen.
    pub fn cycle(&mut self, delta: i64) -> Vec<Req> {
        let n = Screen::ALL.len() as i64;
        let i = (self.screen.index() as i64 + delta).rem_euclid(n) as usize;
        self.screen = Screen::ALL[i];
        self.refresh()
    }

    /// Shows a screen.
    pub fn show(&mut self, screen: Screen) -> Vec<Req> {
        self.screen = screen;
        self.refresh()
    }
}

/// A request.
pub fn req(cmd: &str, args: Value, then: Then) -> Req {
    Req {
        cmd: cmd.into(),
        args,
        then,
    }
}

/// `status` as a word for a task status.
pub fn status_word(s: &TaskStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
