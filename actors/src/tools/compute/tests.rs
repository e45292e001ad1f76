//! The exact tools and the reading of requests in words.

use serde_json::{json, Value};

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
