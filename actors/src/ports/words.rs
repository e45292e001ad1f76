//! Words of a text as the household compares them: the content words two texts share (memory's relevance,
//! the direct path's notes, the Curator's grounding) and the ` [task <id>]` mark a remembered note ends with.
//! Plain text rules, no model.

/// What a memory note ends with when its row came from a task: ` [task <id>]` (the research step of the
/// Contrapunto cites it; the direct path cuts it off with [`without_task`], a task id being noise to a small
/// model).
pub const TASK_MARK: &str = " [task ";

/// A note without its ` [task <id>]` ending.
pub fn without_task(note: &str) -> &str {
    match note.rfind(TASK_MARK) {
        Some(i) if note.ends_with(']') => &note[..i],
        _ => note,
    }
}

/// Content words of `text`: lower-cased runs of letters and digits, at least three long, not in a short
/// list of function words, a final plural `s` dropped. Memory and self-knowledge notes must share one with the task to be shown.
pub fn content_words(text: &str) -> std::collections::BTreeSet<String> {
    const STOP: &[&str] = &[
        "the", "and", "for", "are", "was", "were", "what", "which", "who", "whom", "whose", "how",
        "why", "when", "where", "that", "this", "these", "those", "with", "from", "into", "your",
        "you", "yours", "does", "did", "has", "have", "had", "can", "could", "would", "should",
        "will", "shall", "may", "might", "must", "not", "any", "all", "one", "its", "his", "her",
        "their", "our", "there", "here", "about", "answer", "reply", "please", "tell", "name",
        "only", "just", "many", "much", "some", "then", "than", "them", "they", "she", "him",
        "out", "yes", "also", "remember", "note", "later", "called", "is",
    ];
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() >= 3 && !STOP.contains(&w.as_str()))
        // A plain plural is the same word: "tools" asks about a "tool".
        .map(|w| match w.strip_suffix('s') {
            Some(stem) if stem.chars().count() >= 3 && !stem.ends_with('s') => stem.to_string(),
            _ => w,
        })
        .collect()
}
