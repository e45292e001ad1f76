//! Exact computation as built-in tools: `calculate` (arithmetic on exact integers and fractions),
//! `days_between` (calendar days between two dates) and `count_letters` (letters of a word, or one letter's
//! occurrences in it) — what a 135M model gets wrong and a few lines of Rust get right. They run in the
//! daemon, not in the sandbox: they read nothing, write nothing and call nothing, their input is bounded
//! (`MAX_EXPRESSION_BYTES`, exponents, digits) and they never panic, so there is nothing for a sandbox to
//! hold back and no 0.4 s sandbox start to pay for a multiplication.
//!
//! [`read_computation`] is the other half: it reads a request written in words ("What is 4821 multiplied by
//! 397?", "How many days are there between March 3, 2024 and June 10, 2024?", "How many times does the letter
//! r appear in strawberry?") as the tool call that answers it, so the household can call the tool without a
//! small model having to write the call.

use async_trait::async_trait;
use chrono::NaiveDate;
use regex::Regex;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Tool, ToolError, ToolOutput};
use crate::llm::{ToolCall, ToolSpec};

/// Longest expression `calculate` takes, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 256;
/// Largest exponent `calculate` raises to.
const MAX_EXPONENT: u32 = 128;
/// Longest text `count_letters` counts in, in bytes.
pub const MAX_TEXT_BYTES: usize = 4096;

fn parse<T: serde::de::DeserializeOwned>(args: Value) -> Result<T, ToolError> {
    serde_json::from_value(args).map_err(|e| ToolError::InvalidArgs(e.to_string()))
}

/// A rational number with exact integer parts (the denominator is positive and the fraction reduced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exact {
    num: i128,
    den: i128,
}

fn gcd(a: i128, b: i128) -> i128 {
    let (mut a, mut b) = (a.unsigned_abs(), b.unsigned_abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1) as i128
}

const OVERFLOW: &str = "the result is too large to compute exactly";

impl Exact {
    fn new(num: i128, den: i128) -> Result<Self, String> {
        if den == 0 {
            return Err("division by zero".into());
        }
        let g = gcd(num, den);
        let sign = if den < 0 { -1 } else { 1 };
        Ok(Self {
            num: num / g * sign,
            den: den / g * sign,
        })
    }

    fn int(n: i128) -> Self {
        Self { num: n, den: 1 }
    }

    fn add(self, o: Self) -> Result<Self, String> {
        let num = self
            .num
            .checked_mul(o.den)
            .and_then(|a| o.num.checked_mul(self.den).and_then(|b| a.checked_add(b)))
            .ok_or(OVERFLOW)?;
        Self::new(num, self.den.checked_mul(o.den).ok_or(OVERFLOW)?)
    }

    fn neg(self) -> Self {
        Self {
            num: -self.num,
            den: self.den,
        }
    }

    fn mul(self, o: Self) -> Result<Self, String> {
        let (g1, g2) = (gcd(self.num, o.den), gcd(o.num, self.den));
        let num = (self.num / g1).checked_mul(o.num / g2).ok_or(OVERFLOW)?;
        let den = (self.den / g2).checked_mul(o.den / g1).ok_or(OVERFLOW)?;
        Self::new(num, den)
    }

    fn div(self, o: Self) -> Result<Self, String> {
        if o.num == 0 {
            return Err("division by zero".into());
        }
        self.mul(Self::new(o.den, o.num)?)
    }

    fn pow(self, e: Self) -> Result<Self, String> {
        if e.den != 1 {
            return Err("only whole-number exponents are supported".into());
        }
        if e.num.unsigned_abs() > u128::from(MAX_EXPONENT) {
            return Err(format!("exponents are limited to {MAX_EXPONENT}"));
        }
        let mut out = Self::int(1);
        for _ in 0..e.num.unsigned_abs() {
            out = out.mul(self)?;
        }
        if e.num < 0 {
            out = Self::int(1).div(out)?;
        }
        Ok(out)
    }

    /// Whether the value is a whole number.
    pub fn is_integer(&self) -> bool {
        self.den == 1
    }

    /// The value as JSON: an integer when whole (a string of digits beyond 64 bits), else a decimal.
    pub fn to_json(&self) -> Value {
        if self.den == 1 {
            match i64::try_from(self.num) {
                Ok(n) => json!(n),
                Err(_) => json!(self.num.to_string()),
            }
        } else {
            json!(self.num as f64 / self.den as f64)
        }
    }

    /// The value as a person reads it: digits, or a decimal of at most 10 places (trailing zeros cut).
    pub fn to_text(&self) -> String {
        if self.den == 1 {
            return self.num.to_string();
        }
        let s = format!("{:.10}", self.num as f64 / self.den as f64);
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Evaluates an arithmetic expression exactly: numbers (with a decimal part), `+ - * / ^` (also `×`, `÷`,
/// `**`), parentheses and unary minus; `sqrt(x)` of a perfect square. Errors say what is wrong.
pub fn evaluate(expr: &str) -> Result<Exact, String> {
    if expr.len() > MAX_EXPRESSION_BYTES {
        return Err(format!(
            "the expression is longer than {MAX_EXPRESSION_BYTES} bytes"
        ));
    }
    let tokens = lex(expr)?;
    let mut p = Parser { t: &tokens, i: 0 };
    let v = p.sum()?;
    if p.i != tokens.len() {
        return Err(format!("unexpected {:?}", tokens[p.i]));
    }
    Ok(v)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(Exact),
    Op(char),
    Open,
    Close,
    Sqrt,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | ',' | '_' => i += 1,
            '0'..='9' | '.' => {
                let start = i;
                while i < chars.len() {
                    let c = chars[i];
                    // A comma followed by exactly three digits groups thousands (`1,000,000`); any other
                    // comma separates.
                    let grouped = c == ','
                        && i > start
                        && (1..=3).all(|k| chars.get(i + k).is_some_and(char::is_ascii_digit))
                        && !chars.get(i + 4).is_some_and(char::is_ascii_digit);
                    if !(c.is_ascii_digit() || c == '.' || grouped) {
                        break;
                    }
                    i += 1;
                }
                let text: String = chars[start..i].iter().filter(|c| **c != ',').collect();
                out.push(Tok::Num(decimal(&text)?));
            }
            '+' | '-' | '/' | '^' => {
                out.push(Tok::Op(c));
                i += 1;
            }
            '×' | 'x' | 'X' => {
                out.push(Tok::Op('*'));
                i += 1;
            }
            '÷' => {
                out.push(Tok::Op('/'));
                i += 1;
            }
            '*' => {
                if chars.get(i + 1) == Some(&'*') {
                    out.push(Tok::Op('^'));
                    i += 2;
                } else {
                    out.push(Tok::Op('*'));
                    i += 1;
                }
            }
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            's' if chars[i..].iter().take(4).collect::<String>() == "sqrt" => {
                out.push(Tok::Sqrt);
                i += 4;
            }
            other => return Err(format!("{other:?} is not part of an arithmetic expression")),
        }
    }
    Ok(out)
}

fn decimal(text: &str) -> Result<Exact, String> {
    let bad = || format!("{text:?} is not a number");
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') || int.len() + frac.len() > 30 {
        return Err(bad());
    }
    let digits = format!("{int}{frac}");
    let num: i128 = digits.parse().map_err(|_| bad())?;
    Exact::new(num, 10i128.pow(frac.len() as u32))
}

struct Parser<'a> {
    t: &'a [Tok],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }

    fn sum(&mut self) -> Result<Exact, String> {
        let mut v = self.product()?;
        while let Some(Tok::Op(c @ ('+' | '-'))) = self.peek().cloned() {
            self.i += 1;
            let r = self.product()?;
            v = if c == '+' { v.add(r)? } else { v.add(r.neg())? };
        }
        Ok(v)
    }

    fn product(&mut self) -> Result<Exact, String> {
        let mut v = self.unary()?;
        while let Some(Tok::Op(c @ ('*' | '/'))) = self.peek().cloned() {
            self.i += 1;
            let r = self.unary()?;
            v = if c == '*' { v.mul(r)? } else { v.div(r)? };
        }
        Ok(v)
    }

    fn unary(&mut self) -> Result<Exact, String> {
        if let Some(Tok::Op('-')) = self.peek() {
            self.i += 1;
            return Ok(self.unary()?.neg());
        }
        if let Some(Tok::Op('+')) = self.peek() {
            self.i += 1;
        }
        self.power()
    }

    fn power(&mut self) -> Result<Exact, String> {
        let base = self.atom()?;
        if let Some(Tok::Op('^')) = self.peek() {
            self.i += 1;
            let e = self.unary()?;
            return base.pow(e);
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<Exact, String> {
        match self.t.get(self.i).cloned() {
            Some(Tok::Num(n)) => {
                self.i += 1;
                Ok(n)
            }
            Some(Tok::Open) => {
                self.i += 1;
                let v = self.sum()?;
                if self.peek() != Some(&Tok::Close) {
                    return Err("a parenthesis is not closed".into());
                }
                self.i += 1;
                Ok(v)
            }
            Some(Tok::Sqrt) => {
                self.i += 1;
                let v = self.atom()?;
                sqrt(v)
            }
            Some(other) => Err(format!("unexpected {other:?}")),
            None => Err("the expression ends too early".into()),
        }
    }
}

fn sqrt(v: Exact) -> Result<Exact, String> {
    if v.num < 0 {
        return Err("the square root of a negative number".into());
    }
    let root = |n: i128| -> Option<i128> {
        let r = (n as f64).sqrt().round() as i128;
        (r - 1..=r + 1).find(|c| *c >= 0 && c.checked_mul(*c) == Some(n))
    };
    match (root(v.num), root(v.den)) {
        (Some(a), Some(b)) => Exact::new(a, b),
        _ => Err("only square roots of perfect squares are exact".into()),
    }
}

/// `calculate`: exact arithmetic.
#[derive(Debug)]
pub struct Calculate(ToolSpec);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalculateArgs {
    expression: String,
}

impl Default for Calculate {
    fn default() -> Self {
        Self::new()
    }
}

impl Calculate {
    /// The tool.
    pub fn new() -> Self {
        Self(ToolSpec {
            name: "calculate".into(),
            description:
                "Compute an arithmetic expression exactly, e.g. 4821 * 397 or (17 + 5) / 2.".into(),
            parameters: json!({
                "type": "object",
                "properties": {"expression": {"type": "string", "description": "Numbers with + - * / ^ and parentheses."}},
                "required": ["expression"]
            }),
        })
    }
}

#[async_trait]
impl Tool for Calculate {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }
    fn version(&self) -> u32 {
        1
    }
    fn origin(&self) -> &str {
        "builtin"
    }
    async fn call(&self, args: Value) -> Result<ToolOutput, ToolError> {
        let a: CalculateArgs = parse(args)?;
        let v = evaluate(&a.expression).map_err(ToolError::InvalidArgs)?;
        Ok(ToolOutput::Value(json!({
            "expression": a.expression.trim(),
            "result": v.to_json(),
            "text": v.to_text(),
            "exact": v.is_integer(),
        })))
    }
}

/// `days_between`: calendar days from one date to another.
#[derive(Debug)]
pub struct DaysBetween(ToolSpec);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DaysArgs {
    from: String,
    to: String,
}

impl Default for DaysBetween {
    fn default() -> Self {
        Self::new()
    }
}

impl DaysBetween {
    /// The tool.
    pub fn new() -> Self {
        Self(ToolSpec {
            name: "days_between".into(),
            description: "Count the days from one date to another (dates as YYYY-MM-DD).".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "from": {"type": "string", "description": "The first date, YYYY-MM-DD."},
                    "to": {"type": "string", "description": "The second date, YYYY-MM-DD."}
                },
                "required": ["from", "to"]
            }),
        })
    }
}

#[async_trait]
impl Tool for DaysBetween {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }
    fn version(&self) -> u32 {
        1
    }
    fn origin(&self) -> &str {
        "builtin"
    }
    async fn call(&self, args: Value) -> Result<ToolOutput, ToolError> {
        let a: DaysArgs = parse(args)?;
        let date = |s: &str| {
            parse_date(s).ok_or_else(|| {
                ToolError::InvalidArgs(format!(
                    "{:?} is not a date (YYYY-MM-DD, or e.g. March 3, 2024)",
                    batos_protocol::truncate(s, 64)
                ))
            })
        };
        let (from, to) = (date(&a.from)?, date(&a.to)?);
        let days = (to - from).num_days();
        Ok(ToolOutput::Value(json!({
            "from": from.to_string(),
            "to": to.to_string(),
            "days": days.abs(),
            "signed_days": days,
        })))
    }
}

/// `count_letters`: letters in a text, or how often one letter occurs in it.
#[derive(Debug)]
pub struct CountLetters(ToolSpec);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LettersArgs {
    text: String,
    #[serde(default)]
    letter: Option<String>,
}

impl Default for CountLetters {
    fn default() -> Self {
        Self::new()
    }
}

impl CountLetters {
    /// The tool.
    pub fn new() -> Self {
        Self(ToolSpec {
            name: "count_letters".into(),
            description:
                "Count the letters of a word or text, or how many times one letter occurs in it."
                    .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "text": {"type": "string", "description": "The word or text."},
                    "letter": {"type": "string", "description": "One letter to count (optional: all letters)."}
                },
                "required": ["text"]
            }),
        })
    }
}

/// How many letters `text` has (`letter` absent), or how many times `letter` occurs in it, ignoring case.
pub fn count_letters(text: &str, letter: Option<char>) -> usize {
    text.chars()
        .filter(|c| c.is_alphabetic())
        .filter(|c| letter.is_none_or(|l| c.to_lowercase().eq(l.to_lowercase())))
        .count()
}

#[async_trait]
impl Tool for CountLetters {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }
    fn version(&self) -> u32 {
        1
    }
    fn origin(&self) -> &str {
        "builtin"
    }
    async fn call(&self, args: Value) -> Result<ToolOutput, ToolError> {
        let a: LettersArgs = parse(args)?;
        if a.text.len() > MAX_TEXT_BYTES {
            return Err(ToolError::InvalidArgs(format!(
                "`text` is longer than {MAX_TEXT_BYTES} bytes"
            )));
        }
        let letter = match a.letter.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(l) => {
                let mut cs = l.chars();
                match (cs.next(), cs.next()) {
                    (Some(c), None) if c.is_alphabetic() => Some(c),
                    _ => return Err(ToolError::InvalidArgs("`letter` must be one letter".into())),
                }
            }
        };
        let count = count_letters(&a.text, letter);
        Ok(ToolOutput::Value(match letter {
            Some(l) => json!({"text": a.text, "letter": l.to_string(), "count": count}),
            None => json!({"text": a.text, "letters": count, "count": count}),
        }))
    }
}

/// The names of the built-in exact tools in this file.
pub const COMPUTE_TOOLS: [&str; 3] = ["calculate", "days_between", "count_letters"];

/// Whether `name` is one of [`COMPUTE_TOOLS`]: their results are exact, and worth remembering as such.
pub fn is_compute(name: &str) -> bool {
    COMPUTE_TOOLS.contains(&name)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn calc(e: &str) -> String {
        evaluate(e)
            .map(|v| v.to_text())
            .unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn arithmetic_is_exact() {
        assert_eq!(calc("4821 * 397"), "1913937");
        assert_eq!(calc("123456 + 654321"), "777777");
        assert_eq!(calc("9876 × 5432"), "53646432");
        assert_eq!(calc("(17 + 5) / 2"), "11");
        assert_eq!(calc("1 / 3"), "0.3333333333");
        assert_eq!(calc("0.1 + 0.2"), "0.3");
        assert_eq!(calc("2 ^ 10"), "1024");
        assert_eq!(calc("2 ** -2"), "0.25");
        assert_eq!(calc("-3 + 5"), "2");
        assert_eq!(calc("1,000,000 * 3"), "3000000");
        assert_eq!(calc("sqrt(144)"), "12");
        assert_eq!(calc("25 / 100 * 80"), "20");
        assert!(calc("1 / 0").contains("division by zero"));
        assert!(calc("2 ^ 1000").contains("limited"));
        assert!(calc("99999999999999999999 ^ 3").contains("too large"));
        assert!(calc("(1 + 2").contains("not closed"));
        assert!(calc("rm -rf /").starts_with("error"));
        assert!(calc(&"1+".repeat(200)).contains("longer"));
        assert!(calc("sqrt(2)").contains("perfect"));
    }

    #[test]
    fn dates_are_read_in_the_usual_forms() {
        let d = |s| parse_date(s).map(|d| d.to_string());
        assert_eq!(d("2024-07-15").as_deref(), Some("2024-07-15"));
        assert_eq!(d("March 3, 2024").as_deref(), Some("2024-03-03"));
        assert_eq!(d("15 July 2024").as_deref(), Some("2024-07-15"));
        assert_eq!(d("3rd of March, 2024").as_deref(), Some("2024-03-03"));
        assert_eq!(d("Feb 29 2024").as_deref(), Some("2024-02-29"));
        assert_eq!(d("Feb 30 2024"), None);
        assert_eq!(d("next Tuesday"), None);
    }

    fn read(text: &str) -> Option<(String, Value)> {
        read_computation(text).map(|c| (c.name, c.arguments))
    }

    #[test]
    fn requests_in_words_become_the_call_that_answers_them() {
        assert_eq!(
            read("What is 4821 multiplied by 397?"),
            Some(("calculate".into(), json!({"expression": "4821 * 397"})))
        );
        for (q, want) in [
            ("What is 7 plus 8?", "15"),
            ("How much is 45 divided by 9?", "5"),
            ("Subtract 17 from 50.", "33"),
            ("What is 25% of 80?", "20"),
            ("What is 3 squared?", "9"),
            ("What is half of 64?", "32"),
            ("What is 15 + 27?", "42"),
            ("Compute 9876 * 5432.", "53646432"),
            ("What is twelve times four?", "48"),
            ("What is the square root of 81?", "9"),
            ("What is 1,234 + 5,678?", "6912"),
        ] {
            let (name, args) = read(q).unwrap_or_else(|| panic!("{q}: no call"));
            assert_eq!(name, "calculate", "{q}");
            let e = args["expression"].as_str().unwrap();
            assert_eq!(calc(e), want, "{q} read as {e}");
        }
        assert_eq!(
            read("How many times does the letter r appear in the word strawberry?"),
            Some((
                "count_letters".into(),
                json!({"text": "strawberry", "letter": "r"})
            ))
        );
        assert_eq!(
            read("How many r's are in strawberry?"),
            Some((
                "count_letters".into(),
                json!({"text": "strawberry", "letter": "r"})
            ))
        );
        assert_eq!(
            read("Count the letter s in 'mississippi'."),
            Some((
                "count_letters".into(),
                json!({"text": "mississippi", "letter": "s"})
            ))
        );
        assert_eq!(
            read("How many letters are in the word 'encyclopedia'?"),
            Some(("count_letters".into(), json!({"text": "encyclopedia"})))
        );
        assert_eq!(
            read("How many days are there between March 3, 2024 and June 10, 2024?"),
            Some((
                "days_between".into(),
                json!({"from": "2024-03-03", "to": "2024-06-10"})
            ))
        );
        assert_eq!(
            read("How many days from 2023-12-25 to 15 January 2024?"),
            Some((
                "days_between".into(),
                json!({"from": "2023-12-25", "to": "2024-01-15"})
            ))
        );
        for none in [
            "What is the capital of France?",
            "Who wrote 1984?",
            "In which year did World War 2 end?",
            "Why do lanterns attract moths?",
            "My locker code is 4417.",
            "Which gate does my flight leave from?",
            "What happened on 2024-07-15?",
            "Call me at 555-1234.",
            "The score was -3.",
            "Write a haiku about the sea.",
        ] {
            assert_eq!(read(none), None, "{none}");
        }
    }

    #[tokio::test]
    async fn the_tools_answer_exactly_and_refuse_bad_arguments() {
        let out = Calculate::new()
            .call(json!({"expression": "4821 * 397"}))
            .await
            .unwrap();
        assert_eq!(
            out,
            ToolOutput::Value(
                json!({"expression": "4821 * 397", "result": 1913937, "text": "1913937", "exact": true})
            )
        );
        assert!(matches!(
            Calculate::new().call(json!({"expression": "2 +"})).await,
            Err(ToolError::InvalidArgs(_))
        ));
        let out = DaysBetween::new()
            .call(json!({"from": "2024-02-01", "to": "2024-03-01"}))
            .await
            .unwrap();
        assert!(matches!(out, ToolOutput::Value(v) if v["days"] == 29));
        assert!(DaysBetween::new()
            .call(json!({"from": "yesterday", "to": "2024-03-01"}))
            .await
            .is_err());
        let out = CountLetters::new()
            .call(json!({"text": "Mississippi", "letter": "S"}))
            .await
            .unwrap();
        assert!(matches!(out, ToolOutput::Value(v) if v["count"] == 4));
        assert!(CountLetters::new()
            .call(json!({"text": "abc", "letter": "ab"}))
            .await
            .is_err());
    }
}
