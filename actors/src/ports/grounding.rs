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

/// How the direct path's prompt frames a note block, a tool's exact result and a person's remembered words. An
/// answer that repeats any of them copied its prompt instead of answering the person.
pub const NOTES_HEADER: &str = "Notes:";
/// See [`NOTES_HEADER`].
pub const EXACT_RESULT: &str = "The exact result, computed by a tool:";
/// See [`NOTES_HEADER`].
pub const SAID_EARLIER: &str = "The person said earlier:";

impl Grounding {
    /// Whether `answer` holds its grounding and claims nothing the grounding cannot confirm: it states the
    /// exact result (or takes a word the note adds), repeats none of the prompt's framing, states no number
    /// that neither the question nor the grounding holds (a wrong result, made-up working), and adds at most
    /// `max_new_words` content words that neither holds (an invented detail). STaR's filter keeps what a
    /// checker can confirm; the rest of an answer is not confirmed by its number. Lived answers that stated
    /// the result and then went on ("144 divided by 12 equals 9", "…17954, which cannot be determined by the
    /// given information. In mathematics…") were being kept as golden.
    pub fn holds(&self, answer: &str, max_new_words: usize) -> bool {
        let takes = match &self.exact {
            Some(x) => states(answer, x),
            None => !self.words.is_disjoint(&added_words(answer, &self.question)),
        };
        takes
            && !echoes_framing(answer)
            && self.foreign_numbers(answer).is_empty()
            && self.new_words(answer).len() <= max_new_words
    }

    /// What the model was shown besides the question: the note, or the exact result with its framing.
    fn shown(&self) -> String {
        match &self.exact {
            Some(x) => format!("{EXACT_RESULT} {x}"),
            None => self.source.clone(),
        }
    }

    /// The numbers `answer` states that neither the question nor what the model was shown holds (compared by
    /// value: `03` is `3`, `9,876` is `9876`).
    pub fn foreign_numbers(&self, answer: &str) -> Vec<String> {
        let known: Vec<f64> = numbers(&self.question)
            .into_iter()
            .chain(numbers(&self.shown()))
            .filter_map(|n| n.parse().ok())
            .collect();
        numbers(answer)
            .into_iter()
            .filter(|n| {
                n.parse::<f64>().map_or(true, |v| {
                    !known
                        .iter()
                        .any(|k| (k - v).abs() <= 1e-9 * v.abs().max(1.0))
                })
            })
            .collect()
    }

    /// The content words of `answer` (numbers aside) that neither the question nor what the model was shown
    /// holds.
    pub fn new_words(&self, answer: &str) -> std::collections::BTreeSet<String> {
        let known =
            crate::ports::words::content_words(&format!("{} {}", self.question, self.shown()));
        crate::ports::words::content_words(answer)
            .into_iter()
            .filter(|w| !known.contains(w) && !w.chars().all(|c| c.is_ascii_digit()))
            .collect()
    }
}

/// Whether `answer` repeats the framing of the direct path's prompt, compared word by word (case and
/// punctuation aside: "the exact result computed by a tool" is the framing too).
pub fn echoes_framing(answer: &str) -> bool {
    let words = |t: &str| {
        let spaced: String = t
            .to_lowercase()
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { ' ' })
            .collect();
        format!(
            " {} ",
            spaced.split_whitespace().collect::<Vec<_>>().join(" ")
        )
    };
    let said = words(answer);
    [NOTES_HEADER, EXACT_RESULT, SAID_EARLIER]
        .iter()
        .any(|f| said.contains(&words(f)))
}

/// The numbers in `text`, thousands separators removed: runs of digits, with a `,` or `.` inside when a digit
/// follows it (`9,876` → `9876`, `10.86`; the full stop ending "is 36." is not part of the number).
pub fn numbers(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let (mut out, mut i) = (Vec::new(), 0);
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let mut n = String::new();
        while i < chars.len() {
            let c = chars[i];
            let joins =
                (c == ',' || c == '.') && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit());
            if c.is_ascii_digit() || (joins && c == '.') {
                n.push(c);
            } else if !joins {
                break;
            }
            i += 1;
        }
        out.push(n);
    }
    out
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

    fn exact(question: &str, x: &str) -> Grounding {
        Grounding {
            source: "the exact result of calculate".into(),
            exact: Some(x.into()),
            words: Default::default(),
            question: question.into(),
        }
    }

    fn note(question: &str, note: &str) -> Grounding {
        Grounding {
            source: note.into(),
            exact: None,
            words: added_words(note, question),
            question: question.into(),
        }
    }

    #[test]
    fn numbers_are_read_whole_with_their_separators_and_decimals() {
        assert_eq!(
            numbers("9,876 minus 1,234 is 8642."),
            ["9876", "1234", "8642"]
        );
        assert_eq!(numbers("It is 10.86, or 36."), ["10.86", "36"]);
        assert_eq!(
            numbers("from 2024-03-03, the 19th"),
            ["2024", "03", "03", "19"]
        );
        assert!(numbers("no digits").is_empty());
    }

    #[test]
    fn a_lived_answer_that_states_its_result_and_claims_more_is_not_grounded() {
        // Answers the Curator kept as golden in a life before this rule (BENCHMARKS.md "Learning curve").
        let g = exact("What is 144 divided by 12?", "12");
        assert!(
            !g.holds("144 divided by 12 equals 9", 3),
            "9 is a wrong result"
        );
        assert_eq!(g.foreign_numbers("144 divided by 12 equals 9"), ["9"]);
        let g = exact("What is 382 times 47?", "17954");
        assert!(!g.holds(
            "To find 382 times 47, you would multiply 17954 by itself four times: (1 + 1 + 0) * 4 = 24",
            3
        ));
        assert!(!g.holds(
            "The answer to this question is 17954, which cannot be determined by the given information. \
             In mathematics, any mathematical",
            3
        ));
        let g = exact("What is 9,876 minus 1,234?", "8642");
        assert!(!g.holds("The exact result, computed by a tool: 8642\nTo clarify the answer, you can provide an example.", 3));
        assert!(
            !g.holds("the exact result computed by a tool is 8642", 3),
            "framing, any case"
        );
        let g = note(
            "What is my dentist called?",
            "The person said earlier: \"Please remember that my dentist is Dr. Okafor.\"",
        );
        assert!(!g.holds(
            "Your dentist is Dr. Okafor, the name of a renowned dental hygienist in Australia.",
            3
        ));
        assert!(!g.holds("The person said earlier: your dentist is Dr. Okafor.", 3));
    }

    #[test]
    fn a_plain_grounded_answer_still_holds() {
        let g = exact("What is 9,876 minus 1,234?", "8642");
        assert!(
            g.holds("9876 - 1234 = 8642", 3),
            "the question's numbers, however written"
        );
        assert!(g.holds("8642", 3));
        let g = exact("What is 1000 divided by 8?", "125");
        assert!(g.holds(
            "1000 divided by 8 equals 125, which is the exact result of the calculation.",
            3
        ));
        let g = exact("What is 15% of 240?", "36");
        assert!(g.holds("15% of 240 is 36.", 3));
        let g = exact("How many days from 2024-03-03 to 2024-07-15?", "134");
        assert!(
            g.holds("There are 134 days from March 3 to July 15, 2024.", 3),
            "03 is 3"
        );
        let g = note(
            "What is my dentist called?",
            "The person said earlier: \"Please remember that my dentist is Dr. Okafor.\"",
        );
        assert!(g.holds("Your dentist is Dr. Okafor.", 3));
        let g = note(
            "Where does my sister Mirela live?",
            "The person said earlier: \"My sister Mirela lives in Lisbon.\"",
        );
        assert!(g.holds("Your sister Mirela lives in Lisbon.", 3));
        assert!(
            !g.holds("Your sister lives somewhere.", 3),
            "takes no word of the note"
        );
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
