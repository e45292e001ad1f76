//! What a direct answer can be checked against without a judge, read from the finished task alone: the exact
//! result a built-in tool computed, or the note that bore most on the question. The orchestrator's direct path
//! uses it to keep an answer honest to its note; the Curator admits an answer that holds its grounding.

use serde_json::Value;

use super::task::{is_compute, Path, TaskState};

/// What a direct answer can be checked against without a judge: the exact result a built-in tool computed for
/// the task, or else the note that bore most on it (what a person told the household, or its self-knowledge).
/// The Curator admits an answer that holds its grounding (STaR's filter: keep what a checker can confirm),
/// where the judge — the same small model — scores almost every answer 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Grounding {
    /// In words: `the exact result of calculate`, or the note.
    pub source: String,
    /// The exact result, when a tool computed one.
    pub exact: Option<String>,
    /// Otherwise the words the note adds to the question.
    pub words: std::collections::BTreeSet<String>,
    /// The question, whose own words do not count as taken from the note.
    pub question: String,
}

impl Grounding {
    /// Whether `answer` states the exact result, or takes at least one of the words the note adds.
    pub fn holds(&self, answer: &str) -> bool {
        match &self.exact {
            Some(x) => states(answer, x),
            None => !self.words.is_disjoint(&added_words(answer, &self.question)),
        }
    }
}

/// The grounding of a finished direct task (`None` for the full path, or with neither a computed result nor a
/// note that adds a word).
pub fn grounding(task: &TaskState) -> Option<Grounding> {
    if task.reading.as_ref().is_none_or(|r| r.path != Path::Direct) {
        return None;
    }
    let exact = task
        .tools_used
        .iter()
        .rev()
        .find(|t| t.ok && is_compute(&t.name))
        .and_then(|t| exact_text(&t.result).map(|x| (t.name.clone(), x)));
    if let Some((tool, x)) = exact {
        return Some(Grounding {
            source: format!("the exact result of {tool}"),
            exact: Some(x),
            words: Default::default(),
            question: task.text.clone(),
        });
    }
    let note = task.context.as_deref()?.lines().next()?.trim().to_string();
    let words = added_words(&note, &task.text);
    (!words.is_empty()).then(|| Grounding {
        source: note,
        exact: None,
        words,
        question: task.text.clone(),
    })
}

/// The words a note adds to a question: lower-cased content words (and numbers of any length) of the note
/// that the question does not hold, without the note's own framing ("The person said earlier").
pub fn added_words(note: &str, question: &str) -> std::collections::BTreeSet<String> {
    const FRAMING: [&str; 7] = [
        "person",
        "said",
        "earlier",
        "tool",
        "computed",
        "answered",
        "household",
    ];
    let asked = crate::ports::words::content_words(question);
    let numbers = note
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string);
    crate::ports::words::content_words(note)
        .into_iter()
        .chain(numbers)
        .filter(|w| !asked.contains(w) && !FRAMING.contains(&w.as_str()))
        .collect()
}

/// Whether `answer` states `exact` as a whole number or word: `99` is not stated by `9902154367809976`.
pub fn states(answer: &str, exact: &str) -> bool {
    answer.match_indices(exact).any(|(i, m)| {
        let before = answer[..i].chars().next_back();
        let after = answer[i + m.len()..].chars().next();
        let joins = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric());
        // A decimal point after the match continues the number only when a digit follows it.
        let decimal = answer[i + m.len()..].starts_with('.')
            && answer[i + m.len() + 1..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit());
        !joins(before) && !joins(after) && !decimal && before != Some('.')
    })
}

/// The exact answer in a built-in tool's JSON result: `count` (count_letters), `days` (days_between) or
/// `text` (calculate).
pub fn exact_text(result: &str) -> Option<String> {
    let v: Value = serde_json::from_str(result).ok()?;
    for key in ["count", "days", "text"] {
        match v.get(key) {
            Some(Value::String(s)) => return Some(s.clone()),
            Some(Value::Number(n)) => return Some(n.to_string()),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_result_is_read_for_its_exact_answer() {
        assert_eq!(
            exact_text(
                r#"{"expression":"4821 * 397","result":1913937,"text":"1913937","exact":true}"#
            )
            .as_deref(),
            Some("1913937")
        );
        assert_eq!(
            exact_text(r#"{"from":"2024-03-03","to":"2024-07-15","days":134}"#).as_deref(),
            Some("134")
        );
        assert_eq!(
            exact_text(r#"{"text":"strawberry","letter":"r","count":3}"#).as_deref(),
            Some("3")
        );
        assert_eq!(exact_text("tool error: x"), None);
    }

    #[test]
    fn an_exact_result_is_stated_only_as_a_whole_number() {
        assert!(states("The answer is 99.", "99"));
        assert!(states("99", "99"));
        assert!(!states("9902154367809976", "99"));
        assert!(!states("It is 1990.", "99"));
        assert!(!states("It is 99.5 days.", "99"));
        assert!(states("4821 × 397 = 1913937", "1913937"));
    }
}
