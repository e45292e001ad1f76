//! How the household reads a task before anyone thinks about it: which path it takes, what form the answer
//! must have, and whether a tool answers it exactly.
//!
//! All of it is deterministic text reading, with no model call, for two measured reasons (BENCHMARKS.md, exam):
//! on the embedded 135M model every model step costs seconds and adds noise the next step amplifies — the
//! routing plan ALFRED wrote ("a task to be done by a team of 16 people") was read by BRICK as the task — and
//! a question's form ("answer yes or no", "reply with only the number", "in at most three words") is written
//! in plain words a rule reads without error.
//!
//! - **Path.** Under `orchestrator.route = "auto"` a short task (at most `orchestrator.direct_max_bytes`) is
//!   answered on the direct path: notes from memory and self-knowledge, an exact tool result when one answers
//!   it, and ALFRED's single answer. Longer work, and every goal the Motivator sets, goes through the full
//!   Contrapunto (draft, critique, redraft). `route = "full"` sends everything through the Contrapunto.
//! - **Contract.** The form the question asks for, compiled into a grammar ([`Contract::schema`]) so the
//!   sampler cannot break it, and read back into plain text ([`Contract::finish`]).
//! - **Computation.** Arithmetic, day counts and letter counts asked in words become the built-in tool call
//!   that answers them ([`crate::tools::compute::read_computation`]).

use regex::Regex;

use serde_json::{json, Value};

pub use crate::ports::task::{Contract, Path, Reading};
pub use crate::ports::words::{content_words, without_task, TASK_MARK};
use crate::settings::{OrchestratorSettings, RouteMode};

/// What the reading needs to know of the household: the names a `OneOf` contract may offer.
#[derive(Debug, Clone, Default)]
pub struct Household {
    /// Registered tool names.
    pub tools: Vec<String>,
    /// Persona names.
    pub personas: Vec<String>,
}

/// Words that mark a task as being about the household itself.
const SELF_WORDS: &[&str] = &[
    "your tools",
    "your tool",
    "of your",
    "your household",
    "your principles",
    "your codex",
    "your members",
    "your personas",
    "household",
    "persona",
];

/// Reads `text` (a task's words) under the orchestrator settings `s`. `goal` is true for a goal the Motivator
/// set: those always take the full path.
pub fn read(text: &str, goal: bool, s: &OrchestratorSettings, house: &Household) -> Reading {
    let lower = text.to_lowercase();
    let direct = s.route == RouteMode::Auto && !goal && text.len() <= s.direct_max_bytes;
    let about_household = SELF_WORDS.iter().any(|w| lower.contains(w));
    let mut contract = contract_of(&lower);
    if about_household {
        if lower.contains("tool's name") || lower.contains("name of the tool") {
            contract = Contract::OneOf {
                names: house.tools.clone(),
            };
        } else if lower.contains("one name") || lower.contains("which member") {
            contract = Contract::OneOf {
                names: house.personas.clone(),
            };
        }
    }
    if matches!(&contract, Contract::OneOf { names } if names.is_empty()) {
        contract = Contract::Free;
    }
    Reading {
        path: if direct { Path::Direct } else { Path::Full },
        computation: if direct {
            crate::tools::compute::read_computation(text).map(|c| (c.name, c.arguments))
        } else {
            None
        },
        contract,
        about_household,
    }
}

fn contract_of(lower: &str) -> Contract {
    if lower.contains("yes or no") {
        return Contract::YesNo;
    }
    if [
        "only the number",
        "just the number",
        "only a number",
        "with a number",
    ]
    .iter()
    .any(|p| lower.contains(p))
        || lower.trim_start().starts_with("how many")
    {
        return Contract::Number;
    }
    if ["one word", "single word"]
        .iter()
        .any(|p| lower.contains(p))
    {
        return Contract::Words { max: 1 };
    }
    static WORDS: std::sync::OnceLock<Option<Regex>> = std::sync::OnceLock::new();
    let re = WORDS.get_or_init(|| {
        Regex::new(r"(?:at most|no more than|fewer than|under|in|within|using) (\w+) words").ok()
    });
    if let Some(c) = re.as_ref().and_then(|re| re.captures(lower)) {
        if let Some(n) = c.get(1).and_then(|m| small_number(m.as_str())) {
            return Contract::Words { max: n.max(1) };
        }
    }
    Contract::Free
}

/// "3" or "three" (up to twenty).
fn small_number(w: &str) -> Option<u32> {
    const WORDS: [&str; 21] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
    ];
    w.parse()
        .ok()
        .or_else(|| WORDS.iter().position(|x| *x == w).map(|i| i as u32))
}

impl Contract {
    /// The JSON schema the answer is constrained to (a grammar on the embedded backend, `format` on Ollama),
    /// or `None` for free text. Words allow letters, digits, apostrophes and hyphens.
    pub fn schema(&self) -> Option<Value> {
        match self {
            Contract::Free => None,
            Contract::YesNo => Some(json!({"type": "string", "enum": ["yes", "no"]})),
            Contract::Number => Some(json!({"type": "integer"})),
            Contract::Words { max } => {
                let word = "[A-Za-z0-9'-]{1,24}";
                Some(json!({
                    "type": "string",
                    "pattern": format!("^{word}( {word}){{0,{}}}$", max.saturating_sub(1)),
                }))
            }
            Contract::OneOf { names } => Some(json!({"type": "string", "enum": names})),
        }
    }

    /// The constrained answer `raw` (JSON, per [`Contract::schema`]) as a person reads it: `Yes.`, `8`,
    /// `Green.`. Text that does not parse is returned trimmed, unchanged.
    pub fn finish(&self, raw: &str) -> String {
        let raw = raw.trim();
        if matches!(self, Contract::Free) {
            return raw.to_string();
        }
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::String(s)) => {
                let s = s.trim();
                match self {
                    Contract::OneOf { .. } => s.to_string(),
                    _ => {
                        let mut c = s.chars();
                        match c.next() {
                            Some(f) => format!("{}{}.", f.to_uppercase(), c.as_str()),
                            None => String::new(),
                        }
                    }
                }
            }
            Ok(Value::Number(n)) => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
                _ => n.to_string(),
            },
            _ => raw.to_string(),
        }
    }

    /// A short label for step summaries.
    pub fn label(&self) -> String {
        match self {
            Contract::Free => "free text".into(),
            Contract::YesNo => "yes or no".into(),
            Contract::Number => "a number".into(),
            Contract::Words { max } => format!("at most {max} word(s)"),
            Contract::OneOf { names } => format!("one of {}", names.join(", ")),
        }
    }
}

/// The notes that bear on `task`, best first, at most `max`: a note is kept when it holds at least
/// `min_share` (0..=1) of the task's content words, and notes are ranked by Jaccard overlap (shared words over
/// the words of both), so the note that is most nearly about the task comes first and a long note that merely
/// mentions one of its words does not. A task without content words keeps no note.
pub fn relevant<'a>(
    task: &str,
    notes: &'a [String],
    max: usize,
    min_share: f64,
) -> Vec<&'a String> {
    let want = content_words(task);
    if want.is_empty() {
        return Vec::new();
    }
    let mut scored: Vec<(f64, usize, &String)> = notes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let words = content_words(n);
            let shared = words.intersection(&want).count();
            let share = shared as f64 / want.len() as f64;
            (shared > 0 && share >= min_share)
                .then(|| (shared as f64 / words.union(&want).count() as f64, i, n))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut seen = std::collections::BTreeSet::new();
    scored
        .into_iter()
        .filter(|(_, _, n)| seen.insert(n.as_str()))
        .take(max)
        .map(|(_, _, n)| n)
        .collect()
}

/// Narrows a `OneOf` contract to the names the best note is about (the words before its first `:`), when it
/// is about any: the grammar then lets the model choose only what the evidence supports.
pub fn narrow(contract: &Contract, best: Option<&String>) -> Contract {
    let (Contract::OneOf { names }, Some(note)) = (contract, best) else {
        return contract.clone();
    };
    let head = note.split(':').next().unwrap_or_default();
    let named: Vec<String> = names
        .iter()
        .filter(|n| {
            head.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|w| w == n.as_str())
        })
        .cloned()
        .collect();
    if named.is_empty() {
        contract.clone()
    } else {
        Contract::OneOf { names: named }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OrchestratorSettings {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/settings.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        crate::settings::Settings::parse(&text, &path)
            .unwrap()
            .orchestrator
    }

    fn house() -> Household {
        Household {
            tools: vec!["calculate".into(), "word_count".into()],
            personas: vec![
                "ALFRED".into(),
                "BABS".into(),
                "BRICK".into(),
                "ROBIN".into(),
            ],
        }
    }

    #[test]
    fn the_form_a_question_asks_for_is_read() {
        let c = |t: &str| read(t, false, &settings(), &house()).contract;
        assert_eq!(c("Answer yes or no: is ice cold?"), Contract::YesNo);
        assert_eq!(
            c("Reply with only the number: how many legs does a spider have?"),
            Contract::Number
        );
        assert_eq!(
            c("Answer with one word: what colour is grass?"),
            Contract::Words { max: 1 }
        );
        assert_eq!(
            c("Name one primary colour. Answer with a single word."),
            Contract::Words { max: 1 }
        );
        assert_eq!(
            c("In at most five words, what do bees make?"),
            Contract::Words { max: 5 }
        );
        assert_eq!(
            c("In at most 3 words, what is the sky?"),
            Contract::Words { max: 3 }
        );
        assert_eq!(c("Why do lanterns attract moths?"), Contract::Free);
        assert_eq!(
            c("How many personas live in your household?"),
            Contract::Number
        );
        assert_eq!(
            c("Which of your tools counts words? Answer with the tool's name."),
            Contract::OneOf {
                names: house().tools
            }
        );
        assert_eq!(
            c("Which member of your household critiques the drafts? Answer with one name."),
            Contract::OneOf {
                names: house().personas
            }
        );
    }

    #[test]
    fn short_tasks_go_direct_and_long_work_and_goals_go_through_the_contrapunto() {
        let mut s = settings();
        let r = read("What is 4821 multiplied by 397?", false, &s, &house());
        assert_eq!(r.path, Path::Direct);
        assert_eq!(
            r.computation.as_ref().map(|c| c.0.as_str()),
            Some("calculate")
        );
        assert_eq!(
            read("What is 4821 multiplied by 397?", true, &s, &house()).path,
            Path::Full
        );
        let long = "Plan the week. ".repeat(s.direct_max_bytes / 10);
        assert_eq!(read(&long, false, &s, &house()).path, Path::Full);
        s.route = RouteMode::Full;
        let r = read("What is 4821 multiplied by 397?", false, &s, &house());
        assert_eq!(r.path, Path::Full);
        assert_eq!(
            r.computation, None,
            "the full path drafts with tools instead"
        );
    }

    #[test]
    fn constrained_answers_read_back_as_a_person_reads_them() {
        assert_eq!(Contract::YesNo.finish("\"yes\""), "Yes.");
        assert_eq!(Contract::Number.finish("8"), "8");
        assert_eq!(Contract::Number.finish("8.0"), "8");
        assert_eq!(Contract::Number.finish("2.5"), "2.5");
        assert_eq!(Contract::Words { max: 1 }.finish("\"green\""), "Green.");
        assert_eq!(
            Contract::OneOf { names: vec![] }.finish("\"word_count\""),
            "word_count"
        );
        assert_eq!(Contract::Free.finish("  Paris. "), "Paris.");
        assert_eq!(Contract::YesNo.finish("not json"), "not json");
    }

    #[test]
    fn schemas_compile_to_the_forms_they_promise() {
        let w = Contract::Words { max: 3 }.schema().unwrap();
        let re = Regex::new(w["pattern"].as_str().unwrap()).unwrap();
        assert!(re.is_match("deep blue sky"));
        assert!(!re.is_match("a deep blue sky"));
        assert_eq!(
            Contract::YesNo.schema().unwrap()["enum"],
            json!(["yes", "no"])
        );
        assert_eq!(Contract::Free.schema(), None);
    }

    #[test]
    fn notes_are_shown_only_when_they_share_a_content_word_with_the_task() {
        let notes = vec![
            "The person said: my cat is called Pixel.".to_string(),
            "The person said: my flight to Lisbon leaves from gate 42.".to_string(),
            "The answer to the question is the answer.".to_string(),
        ];
        let r = relevant("What is my cat called?", &notes, 3, 0.5);
        assert_eq!(r, vec![&notes[0]]);
        let r = relevant(
            "Which gate does my flight to Lisbon leave from?",
            &notes,
            3,
            0.5,
        );
        assert_eq!(r, vec![&notes[1]]);
        assert!(relevant("What is the answer?", &notes, 3, 0.5).is_empty());
        // One shared word of three is not enough: "month" does not make a dentist's date about June.
        let dentist = vec![
            "The person said earlier: My dentist appointment is on the 19th of next month."
                .to_string(),
        ];
        assert!(relevant("Which month comes after June?", &dentist, 3, 0.5).is_empty());
    }

    #[test]
    fn the_closest_note_ranks_first_and_names_the_choice() {
        let notes = vec![
            "The tool count_letters: Count the letters of a word or text, or how many times one letter occurs in it."
                .to_string(),
            "The tool word_count: Count the words and characters in a text.".to_string(),
        ];
        let q = "Which of your tools counts the words in a text? Answer with the tool's name.";
        let r = relevant(q, &notes, 3, 0.5);
        assert_eq!(r[0], &notes[1]);
        let all = Contract::OneOf {
            names: vec!["count_letters".into(), "word_count".into()],
        };
        assert_eq!(
            narrow(&all, r.first().copied()),
            Contract::OneOf {
                names: vec!["word_count".into()]
            }
        );
        let house = "The household has 4 personas (members): ALFRED, BABS.".to_string();
        assert_eq!(narrow(&all, Some(&house)), all);
    }
}
