//! The exact evaluator behind `calculate`: rationals on `i128` parts, a lexer and a recursive-descent parser.
//! Every size is bounded (`MAX_EXPRESSION_BYTES`, `MAX_EXPONENT`, overflow checked at each step), so it never
//! panics and never runs long.

use serde_json::{json, Value};

/// Longest expression `calculate` takes, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 256;
/// Largest exponent `calculate` raises to.
const MAX_EXPONENT: u32 = 128;

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
