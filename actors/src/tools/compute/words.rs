//! Requests in words read as the built-in tool call that answers them, and the date forms people write.

use chrono::NaiveDate;
use regex::Regex;
use serde_json::{json, Value};

use super::exact::evaluate;
use crate::llm::ToolCall;
/// A date in one of the usual forms: `2024-07-15`, `July 15, 2024`, `July 15 2024`, `15 July 2024`,
/// `15th of July, 2024` (month names in full or their first three letters).
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let s = s.trim().trim_end_matches(['.', '?', ',']).trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d);
    }
    let cleaned: String = s.replace(',', " ").replace(" of ", " ");
    let words: Vec<String> = cleaned
        .split_whitespace()
        .map(|w| {
            let w = w.to_lowercase();
            for suffix in ["st", "nd", "rd", "th"] {
                if let Some(n) = w.strip_suffix(suffix) {
                    if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) {
                        return n.to_string();
                    }
                }
            }
            w
        })
        .collect();
    let month = |w: &str| -> Option<u32> {
        const NAMES: [&str; 12] = [
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        ];
        NAMES
            .iter()
            .position(|m| w == *m || (w.len() >= 3 && m.starts_with(w) && w.len() <= m.len()))
            .map(|i| i as u32 + 1)
    };
    let num = |w: &str| w.parse::<i32>().ok();
    match words.as_slice() {
        [m, d, y] if month(m).is_some() => {
            NaiveDate::from_ymd_opt(num(y)?, month(m)?, u32::try_from(num(d)?).ok()?)
        }
        [d, m, y] if month(m).is_some() => {
            NaiveDate::from_ymd_opt(num(y)?, month(m)?, u32::try_from(num(d)?).ok()?)
        }
        _ => None,
    }
}

/// Number words read into digits before arithmetic is looked for.
const NUMBER_WORDS: &[(&str, &str)] = &[
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
    ("eleven", "11"),
    ("twelve", "12"),
    ("twenty", "20"),
    ("thirty", "30"),
    ("forty", "40"),
    ("fifty", "50"),
    ("hundred", "100"),
];

struct Patterns {
    letters_one: Regex,
    letters_plural: Regex,
    letters_count: Regex,
    letters_all: Regex,
    days: Regex,
    phrases: Vec<(Regex, &'static str)>,
    expression: Regex,
}

fn patterns() -> Option<&'static Patterns> {
    static P: std::sync::OnceLock<Option<Patterns>> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let r = |p: &str| Regex::new(p).ok();
        // The quotes a word may come in.
        const Q: &str = r#"["'“”‘’]?"#;
        Some(Patterns {
            letters_one: r(&format!(
                r"(?i)how many times (?:does|do|is) (?:the )?(?:letter )?{Q}([a-z]){Q} (?:appear|occur|show up|used)(?:s)? in (?:the )?(?:word |name )?{Q}([a-z]+(?:['-][a-z]+)*){Q}"
            ))?,
            letters_plural: r(&format!(
                r"(?i)how many {Q}([a-z]){Q}(?:'s|s)? (?:are there |is there |are |is |does it have |appear )?in (?:the )?(?:word |name )?{Q}([a-z]+(?:['-][a-z]+)*){Q}"
            ))?,
            letters_count: r(&format!(
                r"(?i)count (?:the |how many )?(?:letter )?{Q}([a-z]){Q}(?:'s|s)? (?:in|of) (?:the )?(?:word )?{Q}([a-z]+(?:['-][a-z]+)*){Q}"
            ))?,
            letters_all: r(&format!(
                r"(?i)how many letters (?:are there |are |does )?(?:in )?(?:the )?(?:word |name )?{Q}([a-z]+(?:['-][a-z]+)*){Q}(?: have| contain)?"
            ))?,
            days: r(r"(?i)how many days (?:are there |is it |are )?(?:between|from) (.+?) (?:and|to|until|till) (.+?)(?:\?|$|\.|,? inclusive)")?,
            phrases: vec![
                (r(r"(?i)\bsubtract (\d[\d.,]*) from (\d[\d.,]*)")?, "($2) - ($1)"),
                (r(r"(?i)\badd (\d[\d.,]*) (?:to|and) (\d[\d.,]*)")?, "($1) + ($2)"),
                (r(r"(?i)\bthe sum of (\d[\d.,]*) and (\d[\d.,]*)")?, "($1) + ($2)"),
                (r(r"(?i)\bthe product of (\d[\d.,]*) and (\d[\d.,]*)")?, "($1) * ($2)"),
                (r(r"(?i)\bthe difference between (\d[\d.,]*) and (\d[\d.,]*)")?, "($1) - ($2)"),
                (r(r"(?i)\bdivide (\d[\d.,]*) by (\d[\d.,]*)")?, "($1) / ($2)"),
                (r(r"(?i)\bmultiply (\d[\d.,]*) by (\d[\d.,]*)")?, "($1) * ($2)"),
                (r(r"(?i)(\d[\d.,]*) ?(?:%|percent) of (\d[\d.,]*)")?, "($1) / 100 * ($2)"),
                (r(r"(?i)\bhalf of (\d[\d.,]*)")?, "($1) / 2"),
                (r(r"(?i)\bdouble (\d[\d.,]*)")?, "($1) * 2"),
                (r(r"(?i)\bthe square root of (\d[\d.,]*)")?, "sqrt($1)"),
                (r(r"(?i)\bsquare root of (\d[\d.,]*)")?, "sqrt($1)"),
                (r(r"(?i)(\d[\d.,]*) squared")?, "($1) ^ 2"),
                (r(r"(?i)(\d[\d.,]*) cubed")?, "($1) ^ 3"),
                (r(r"(?i)\bto the power of\b")?, "^"),
                (r(r"(?i)\bmultiplied by\b")?, "*"),
                (r(r"(?i)\bdivided by\b")?, "/"),
                (r(r"(?i)\btimes\b")?, "*"),
                (r(r"(?i)\bplus\b")?, "+"),
                (r(r"(?i)\bminus\b")?, "-"),
                (r(r"(?i)\bover\b")?, "/"),
            ],
            // The longest run of numbers, operators, parentheses, spaces and `sqrt`.
            expression: r(r"(?:sqrt|[\d.,()+\-*/^×÷ ]|\bx\b)+")?,
        })
    })
    .as_ref()
}

/// Whether an expression found in a request is arithmetic someone asked for: digits and an operator (or a
/// square root) — but not only hyphens without spaces, which join the parts of a date (`2024-07-15`), a phone
/// number or a code, and not a lone negative number.
fn is_arithmetic(e: &str) -> bool {
    let has_digit = e.chars().any(|c| c.is_ascii_digit());
    let ops: Vec<char> = e.chars().filter(|c| "+-*/^×÷".contains(*c)).collect();
    if !has_digit || (ops.is_empty() && !e.contains("sqrt")) {
        return false;
    }
    if ops.iter().all(|c| *c == '-') && !e.contains("sqrt") {
        let spaced = e.contains(" - ") || e.contains(") -") || e.contains("- (");
        let leading_only = e.starts_with('-') && ops.len() == 1;
        return spaced && !leading_only;
    }
    true
}

/// The tool call that answers `text`, when it asks for a computation these tools do: letters counted in a
/// word, days between two dates, or arithmetic written in symbols or words (at least one operator between
/// numbers). `None` for anything else — the household then answers as usual.
pub fn read_computation(text: &str) -> Option<ToolCall> {
    let p = patterns()?;
    let call = |name: &str, arguments: Value| {
        Some(ToolCall {
            name: name.into(),
            arguments,
        })
    };
    for re in [&p.letters_one, &p.letters_plural, &p.letters_count] {
        if let Some(c) = re.captures(text) {
            return call(
                "count_letters",
                json!({"text": c[2].to_string(), "letter": c[1].to_lowercase()}),
            );
        }
    }
    if let Some(c) = p.letters_all.captures(text) {
        return call("count_letters", json!({"text": c[1].to_string()}));
    }
    if let Some(c) = p.days.captures(text) {
        if let (Some(a), Some(b)) = (parse_date(&c[1]), parse_date(&c[2])) {
            return call(
                "days_between",
                json!({"from": a.to_string(), "to": b.to_string()}),
            );
        }
    }
    // Arithmetic: number words to digits, phrases to operators, then the longest expression found.
    let mut t = format!(" {} ", text.replace(['?', '='], " "));
    for (w, d) in NUMBER_WORDS {
        if let Ok(re) = Regex::new(&format!(r"(?i)\b{w}\b")) {
            t = re.replace_all(&t, *d).into_owned();
        }
    }
    for (re, rep) in &p.phrases {
        t = re.replace_all(&t, *rep).into_owned();
    }
    let best = p
        .expression
        .find_iter(&t)
        .map(|m| m.as_str().trim().trim_end_matches([',', '.']).trim())
        .filter(|e| is_arithmetic(e))
        .max_by_key(|e| e.len())?;
    evaluate(best).ok()?;
    call("calculate", json!({"expression": best}))
}
