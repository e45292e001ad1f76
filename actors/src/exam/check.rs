//! Judging one answer: the question's check (accepted strings on word boundaries, a regex, a number), its
//! word limit, and the inner vocabulary an answer to a person must not use unprompted. Pure functions, so
//! every rule is a unit test.

use std::collections::BTreeSet;

use batos_protocol::exam::{ExamCheck, ExamQuestion};
use regex::{Regex, RegexBuilder};

/// The household's inner vocabulary: names and steps an answer to a person never speaks of unless the
/// question does (or the question is about the household, `inner_ok`). Each entry is matched on word
/// boundaries; `true` matches it case-insensitively, `false` exactly as written (so the bird "robin" or
/// "the architect of the bridge" are not leaks, while "ROBIN" and "the Architect" are).
pub const INNER_WORDS: &[(&str, bool)] = &[
    ("ALFRED", false),
    ("Alfred", false),
    ("BABS", false),
    ("Babs", false),
    ("BRICK", false),
    ("ROBIN", false),
    ("Architect", false),
    ("BAT OS", true),
    ("Contrapunto", true),
    ("codex", true),
    ("dissonance", true),
    ("draft", true),
    ("drafts", true),
    ("plan", true),
    ("plans", true),
    ("research notes", true),
];

/// Why a compiled check could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("question {id}: {why}")]
pub struct CheckError {
    /// The question.
    pub id: String,
    /// What is wrong (an invalid regex).
    pub why: String,
}

/// A question's check, ready to judge answers.
#[derive(Debug, Clone)]
pub struct Grader {
    check: ExamCheck,
    regex: Option<Regex>,
    max_words: Option<u32>,
    question_numbers: Vec<f64>,
}

impl Grader {
    /// Compiles `q`'s check (its regex, case-insensitive).
    pub fn new(q: &ExamQuestion) -> Result<Self, CheckError> {
        let regex = match &q.check.regex {
            Some(r) => Some(
                RegexBuilder::new(r)
                    .case_insensitive(true)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| CheckError {
                        id: q.id.clone(),
                        why: format!("invalid `check.regex`: {e}"),
                    })?,
            ),
            None => None,
        };
        Ok(Self {
            check: q.check.clone(),
            regex,
            max_words: q.max_words,
            question_numbers: numbers(&q.question),
        })
    }

    /// Whether `answer` passes, and why in a few words.
    pub fn grade(&self, answer: &str) -> (bool, String) {
        if answer.trim().is_empty() {
            return (false, "no answer".into());
        }
        if let Some(max) = self.max_words {
            let words = answer.split_whitespace().count();
            if words > max as usize {
                return (false, format!("{words} words > {max}"));
            }
        }
        if let Some(bad) = self.check.reject.iter().find(|r| contains_word(answer, r)) {
            return (false, format!("rejected {bad:?}"));
        }
        if let Some(any) = &self.check.any {
            return match any.iter().find(|a| contains_word(answer, a)) {
                Some(a) => (true, format!("matched {a:?}")),
                None => (false, "no accepted string".into()),
            };
        }
        if let Some(re) = &self.regex {
            return match re.find(answer) {
                Some(m) => (true, format!("matched {:?}", m.as_str())),
                None => (false, "regex did not match".into()),
            };
        }
        let Some(want) = self.check.number else {
            return (false, "no check".into());
        };
        let found: Vec<f64> = numbers(answer)
            .into_iter()
            .filter(|n| !self.question_numbers.iter().any(|q| same(*q, *n)))
            .collect();
        match found
            .iter()
            .find(|n| (*n - want).abs() <= self.check.tolerance + f64::EPSILON * want.abs())
        {
            Some(n) => (true, format!("number {n}")),
            None if found.is_empty() => (false, "no number".into()),
            None => (false, format!("numbers {found:?}, want {want}")),
        }
    }
}

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(1.0)
}

/// The inner words `answer` uses that `q` does not invite (none when the question is `inner_ok`).
pub fn leaks(q: &ExamQuestion, answer: &str) -> Vec<String> {
    if q.inner_ok {
        return Vec::new();
    }
    let mut out = BTreeSet::new();
    for (word, fold) in INNER_WORDS {
        let found = if *fold {
            contains_word(answer, word)
        } else {
            contains_exact(answer, word)
        };
        if found && !contains_word(&q.question, word) {
            out.insert(word.to_string());
        }
    }
    out.into_iter().collect()
}

/// Whether `needle` occurs in `hay`, case-insensitively, with no letter or digit right before or after it
/// (where its own first or last character is one).
pub fn contains_word(hay: &str, needle: &str) -> bool {
    find_bounded(&hay.to_lowercase(), &needle.to_lowercase())
}

fn contains_exact(hay: &str, needle: &str) -> bool {
    find_bounded(hay, needle)
}

fn find_bounded(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let starts_word = needle.chars().next().is_some_and(char::is_alphanumeric);
    let ends_word = needle.chars().last().is_some_and(char::is_alphanumeric);
    let mut from = 0;
    while let Some(pos) = hay[from..].find(needle) {
        let start = from + pos;
        let end = start + needle.len();
        let before_ok = !starts_word
            || !hay[..start]
                .chars()
                .last()
                .is_some_and(char::is_alphanumeric);
        let after_ok = !ends_word || !hay[end..].chars().next().is_some_and(char::is_alphanumeric);
        if before_ok && after_ok {
            return true;
        }
        from = start + needle.chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// Number words read as numbers.
const NUMBER_WORDS: &[(&str, f64)] = &[
    ("zero", 0.0),
    ("one", 1.0),
    ("two", 2.0),
    ("three", 3.0),
    ("four", 4.0),
    ("five", 5.0),
    ("six", 6.0),
    ("seven", 7.0),
    ("eight", 8.0),
    ("nine", 9.0),
    ("ten", 10.0),
    ("eleven", 11.0),
    ("twelve", 12.0),
    ("thirteen", 13.0),
    ("fourteen", 14.0),
    ("fifteen", 15.0),
    ("sixteen", 16.0),
    ("seventeen", 17.0),
    ("eighteen", 18.0),
    ("nineteen", 19.0),
    ("twenty", 20.0),
];

/// Every number in `text`, in order: digits (thousands grouped by commas or not, a decimal part, a leading
/// minus that follows no letter or digit, an ordinal suffix such as `19th`) and the words zero to twenty.
pub fn numbers(text: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            // A digit glued to a letter before it (`H2O`, `CO2`) is part of a name, not a number.
            let glued = i > 0 && b[i - 1].is_ascii_alphabetic();
            let start = i;
            let negative = start > 0
                && b[start - 1] == b'-'
                && (start < 2 || !b[start - 2].is_ascii_alphanumeric());
            let mut digits = String::new();
            while i < b.len() {
                if b[i].is_ascii_digit() {
                    digits.push(b[i] as char);
                    i += 1;
                } else if b[i] == b','
                    && b.len() >= i + 4
                    && b[i + 1..i + 4].iter().all(u8::is_ascii_digit)
                    && b.get(i + 4).is_none_or(|c| !c.is_ascii_digit())
                {
                    // A thousands separator: exactly three digits follow.
                    i += 1;
                } else {
                    break;
                }
            }
            if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
                digits.push('.');
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    digits.push(b[i] as char);
                    i += 1;
                }
            }
            if glued {
                continue;
            }
            if let Ok(mut n) = digits.parse::<f64>() {
                if negative {
                    n = -n;
                }
                out.push(n);
            }
        } else if b[i].is_ascii_alphabetic() {
            let start = i;
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            let word = text[start..i].to_ascii_lowercase();
            if let Some((_, n)) = NUMBER_WORDS.iter().find(|(w, _)| *w == word) {
                out.push(*n);
            }
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use batos_protocol::exam::parse_set;

    fn q(line: &str) -> ExamQuestion {
        parse_set(line).unwrap().remove(0)
    }

    fn grade(line: &str, answer: &str) -> bool {
        Grader::new(&q(line)).unwrap().grade(answer).0
    }

    #[test]
    fn accepted_strings_match_on_word_boundaries_and_rejections_win() {
        let l = r#"{"id":"a","category":"fact","question":"Capital of Australia?","check":{"any":["Canberra"],"reject":["Sydney"]}}"#;
        assert!(grade(l, "The capital is canberra."));
        assert!(!grade(l, "Canberras"));
        assert!(!grade(l, "Sydney, not Canberra"));
        assert!(!grade(l, ""));
        let l = r#"{"id":"a","category":"fact","question":"Gas?","check":{"any":["carbon dioxide","CO2"]}}"#;
        assert!(grade(l, "They take in CO2."));
        assert!(!grade(l, "carbon  dioxide"));
        assert!(grade(l, "Carbon dioxide (CO2)"));
        let l =
            r#"{"id":"a","category":"fact","question":"Painter?","check":{"any":["da Vinci"]}}"#;
        assert!(grade(l, "Leonardo da Vinci painted it"));
    }

    #[test]
    fn a_regex_is_case_insensitive_and_a_bad_one_is_refused() {
        let l =
            r#"{"id":"a","category":"i","question":"Shout hello","check":{"regex":"\\bHELLO\\b"}}"#;
        assert!(grade(l, "hello there"));
        assert!(!grade(l, "othello"));
        let bad = r#"{"id":"a","category":"i","question":"q","check":{"regex":"(unclosed"}}"#;
        assert!(Grader::new(&q(bad)).unwrap_err().why.contains("regex"));
    }

    #[test]
    fn numbers_are_read_in_every_usual_form_and_the_questions_own_do_not_count() {
        assert_eq!(numbers("1,913,937 and 42."), vec![1_913_937.0, 42.0]);
        assert_eq!(numbers("on the 19th at 4.5"), vec![19.0, 4.5]);
        assert_eq!(numbers("It is -3 or 5-3"), vec![-3.0, 5.0, 3.0]);
        assert_eq!(numbers("three r's, H2O, CO2"), vec![3.0]);
        assert_eq!(numbers("1,2,3"), vec![1.0, 2.0, 3.0]);
        let l = r#"{"id":"a","category":"c","question":"What is 4821 multiplied by 397?","check":{"number":1913937}}"#;
        assert!(grade(l, "4821 × 397 = 1,913,937"));
        assert!(grade(l, "The product is 1913937."));
        assert!(!grade(l, "4821 times 397 is about 2 million"));
        assert!(!grade(l, "I don't know"));
        let l = r#"{"id":"a","category":"c","question":"Letters?","check":{"number":3}}"#;
        assert!(grade(l, "There are three."));
        let l = r#"{"id":"a","category":"c","question":"Pi?","check":{"number":3.14,"tolerance":0.01}}"#;
        assert!(grade(l, "about 3.141"));
        assert!(!grade(l, "about 3.2"));
    }

    #[test]
    fn the_word_limit_counts_words() {
        let l = r#"{"id":"a","category":"i","question":"One word: colour of grass?","check":{"any":["green"]},"max_words":1}"#;
        assert!(grade(l, "Green."));
        let g = Grader::new(&q(l)).unwrap();
        assert_eq!(g.grade("It is green."), (false, "3 words > 1".to_string()));
    }

    #[test]
    fn inner_words_leak_unless_the_question_uses_them_or_asks_about_the_household() {
        let plain = q(
            r#"{"id":"a","category":"f","question":"What is the capital of France?","check":{"any":["Paris"]}}"#,
        );
        assert_eq!(
            leaks(
                &plain,
                "You are ALFRED. Your plan: Paris, as the Architect wants."
            ),
            vec!["ALFRED", "Architect", "plan"]
        );
        assert!(leaks(&plain, "A robin built a brick wall; Paris.").is_empty());
        let asks = q(
            r#"{"id":"a","category":"f","question":"Make a plan for Sunday.","check":{"any":["x"]}}"#,
        );
        assert!(leaks(&asks, "My plan: rest.").is_empty());
        let house = q(
            r#"{"id":"a","category":"household","question":"Who critiques?","check":{"any":["ROBIN"]},"inner_ok":true}"#,
        );
        assert!(leaks(&house, "ROBIN critiques each draft.").is_empty());
    }
}
