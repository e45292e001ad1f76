//! The direct path (see `orchestrator/reading.rs`): route and research without a model call, an exact tool
//! result when the task asks for one, and a single answer by ALFRED in the form the task asks for.
//!
//! Every prompt here speaks plainly to a small model: the task in the person's own words, the notes that bear
//! on it, the tool's result. None of the household's inner vocabulary (the Architect, drafts, plans, persona
//! names) is put before a question that did not ask about the household: the exam found that words in the
//! prompt come back in the answer.

use batos_protocol::truncate;

use super::{request, Runner, StepOut, SUMMARY_BYTES};
use crate::llm::ToolCall;
use crate::llm::{ChatMessage, Role};
use crate::orchestrator::reading::{narrow, relevant, without_task, Contract, Household, Path};
use crate::orchestrator::{Node, TaskState};
use crate::ports::grounding::{
    added_words, exact_text, states, EXACT_RESULT, NOTES_HEADER, SAID_EARLIER,
};

/// The one sentence of self-knowledge that no registry holds: how principles change (the codex governor's
/// rule, enforced in `codex/`).
const AMENDMENT_RULE: &str =
    "The household's principles (its codex) change only when the Architect, a \
                              human, approves an amendment; no persona may change them alone.";

impl Runner {
    /// What the reading needs of the household: its tools and members, sorted.
    pub(super) fn household(&self) -> Household {
        let mut tools: Vec<String> = self.cog.tools.snapshot().keys().cloned().collect();
        tools.sort();
        let mut personas: Vec<String> = self.personas.keys().cloned().collect();
        personas.sort();
        Household { tools, personas }
    }

    /// The household's self-knowledge as notes: its members and their roles (from the live codex), its tools
    /// and what each does (from the registry), and how its principles change.
    fn self_knowledge(&self) -> Vec<String> {
        let house = self.household();
        let mut notes = vec![format!(
            "The household has {} personas (members): {}.",
            house.personas.len(),
            house.personas.join(", ")
        )];
        for p in &house.personas {
            if let Some(c) = self.cog.personas.config(p) {
                notes.push(format!(
                    "{p}, a member of the household: {}",
                    c.codex.role.trim()
                ));
            }
        }
        for t in self.cog.tools.snapshot().values() {
            let spec = t.spec();
            notes.push(format!(
                "The tool {}: {}",
                spec.name,
                spec.description.trim()
            ));
        }
        notes.push(AMENDMENT_RULE.to_string());
        notes
    }

    /// The retrieved `notes` that bear on `text` (`orchestrator.note_min_share` of its content words), closest
    /// first: what either path's research is shown.
    pub(super) fn bearing(&self, text: &str, notes: &[String]) -> Vec<String> {
        let share = self.cog.settings.load().orchestrator.note_min_share;
        relevant(text, notes, usize::MAX, share)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Whether the task was read for the direct path.
    pub(super) fn is_direct(task: &TaskState) -> bool {
        task.reading
            .as_ref()
            .is_some_and(|r| r.path == Path::Direct)
    }

    /// Route, direct: no model call. Memory is consulted here, as on the full path (only the memories that
    /// bear on the task are kept); research follows when one does or the task is about the household.
    pub(super) async fn route_direct(&mut self, task: &mut TaskState) -> StepOut {
        if let Some(memory) = &self.cog.memory {
            match memory.retrieve(&task.text).await {
                Ok(notes) => task.memories = self.bearing(&task.text, &notes),
                Err(e) => {
                    tracing::warn!(event = "memory.retrieve_failed", task = %task.id, error = %e, "memory not consulted")
                }
            }
        }
        let reading = task.reading.clone().unwrap_or_default();
        let next = if !task.memories.is_empty() || reading.about_household {
            Node::Research
        } else if reading.computation.is_some() {
            Node::Draft
        } else {
            Node::Synthesize
        };
        let mut summary = format!("direct: answer as {}", reading.contract.label());
        if let Some((tool, _)) = &reading.computation {
            summary.push_str(&format!("; computed by {tool}"));
        }
        self.quiet_step("ALFRED", summary, next)
    }

    /// Research, direct: the memories and self-knowledge that share a content word with the task, at most
    /// `orchestrator.direct_notes`, most shared words first. No model call: BABS's notes were where a small
    /// model's inventions became "facts" for the next step.
    pub(super) fn research_direct(&mut self, task: &mut TaskState) -> StepOut {
        let reading = task.reading.clone().unwrap_or_default();
        let (max, share) = {
            let s = self.cog.settings.load();
            (s.orchestrator.direct_notes, s.orchestrator.note_min_share)
        };
        let mut candidates: Vec<String> = task
            .memories
            .iter()
            .map(|m| without_task(m).to_string())
            .collect();
        if reading.about_household {
            candidates.extend(self.self_knowledge());
        }
        let chosen: Vec<String> = relevant(&task.text, &candidates, max, share)
            .into_iter()
            .cloned()
            .collect();
        if let Some(r) = task.reading.as_mut() {
            r.contract = narrow(&r.contract, chosen.first());
        }
        task.context = (!chosen.is_empty()).then(|| chosen.join("\n"));
        let summary = if chosen.is_empty() {
            "no note bears on the task".to_string()
        } else {
            format!("{} note(s): {}", chosen.len(), chosen.join(" · "))
        };
        let next = if reading.computation.is_some() {
            Node::Draft
        } else {
            Node::Synthesize
        };
        self.quiet_step("BABS", summary, next)
    }

    /// Draft, direct: the built-in tool call the reading found, run through the registry like any call.
    pub(super) async fn draft_direct(&mut self, task: &mut TaskState) -> StepOut {
        let reading = task.reading.clone().unwrap_or_default();
        let summary = match reading.computation {
            Some((name, arguments)) => {
                let call = ToolCall { name, arguments };
                let (msg, _) = self.run_tool(task, &call).await;
                format!("{}({}) → {msg}", call.name, call.arguments)
            }
            None => "no computation".to_string(),
        };
        self.quiet_step("BRICK", summary, Node::Synthesize)
    }

    /// Synthesize, direct: ALFRED answers the task in its own words, after the notes and the tool's result,
    /// held by the contract's grammar. An answer that drops a successful computation's exact result is
    /// replaced by the result itself: the person asked for that number, not for the model's copy of it.
    pub(super) async fn synthesize_direct(
        &mut self,
        task: &mut TaskState,
    ) -> Result<StepOut, String> {
        let reading = task.reading.clone().unwrap_or_default();
        let exact = task
            .tools_used
            .iter()
            .rev()
            .find(|t| t.ok && crate::tools::compute::is_compute(&t.name))
            .and_then(|t| exact_text(&t.result));
        let mut prompt = String::new();
        if let Some(ctx) = &task.context {
            prompt.push_str(&format!("{NOTES_HEADER}\n{ctx}\n\n"));
        }
        if let Some(x) = &exact {
            prompt.push_str(&format!("{EXACT_RESULT} {x}\n\n"));
        }
        prompt.push_str(task.text.trim());
        let schema = reading.contract.schema();
        let stream = schema.is_none() && self.cog.settings.load().orchestrator.stream_tokens;
        // A number asked for and computed exactly is the answer; a model's copy of it could only be worse.
        if let (Contract::Number, Some(x)) = (&reading.contract, &exact) {
            task.result = Some(x.clone());
            return Ok(self.quiet_step("ALFRED", x.clone(), Node::Done));
        }
        let samples = self.cog.settings.load().orchestrator.direct_samples.max(1);
        let mut req = request(String::new(), schema, stream && samples == 1);
        for (q, a) in shots(&reading.contract, task.context.is_some()) {
            req.messages.push(ChatMessage::new(Role::User, *q));
            req.messages.push(ChatMessage::new(Role::Assistant, *a));
        }
        req.messages.push(ChatMessage::new(Role::User, prompt));
        let mut answers = Vec::with_capacity(samples);
        let mut last = None;
        for sample in 0..samples {
            // Each draw its own seed: with one seed the draws were one answer three times.
            req.sample = u32::try_from(sample).unwrap_or(u32::MAX);
            let t = self.think(&task.id, "ALFRED", req.clone()).await?;
            answers.push(reading.contract.finish(&t.response.content));
            last = Some(t);
        }
        let t = last.ok_or("ALFRED made no model call")?;
        let mut answer = answers[consensus(&answers, &task.text)].clone();
        if let Some(x) = exact {
            if !states(&answer, &x) {
                answer = match reading.contract {
                    Contract::Free => format!("{x}."),
                    _ => x,
                };
            }
        } else if let (Contract::Free, Some(best)) = (&reading.contract, task.context.as_deref()) {
            // The note that bears most on the task comes first; a free answer that takes nothing from it
            // (none of the words it adds to the question) ignored the one thing known, and quotes it instead.
            let best = best.lines().next().unwrap_or_default();
            if ignores(&answer, best, &task.text) {
                answer = quoted(best);
            }
        }
        task.result = Some(answer.clone());
        Ok(StepOut::from_thought(&t, &answer, Node::Done))
    }

    /// A step that made no model call.
    fn quiet_step(&self, persona: &str, summary: String, next: Node) -> StepOut {
        let h = self.personas.get(persona);
        StepOut {
            persona: persona.into(),
            model: String::new(),
            backend: h.map(|h| h.backend.to_string()).unwrap_or_default(),
            dissonance: None,
            summary: truncate(summary.trim(), SUMMARY_BYTES).to_string(),
            next,
            finish: None,
        }
    }
}

/// Worked examples put before a direct answer as earlier turns of its conversation, in the form the contract
/// holds the answer to (JSON where a grammar applies). A 135M model follows an example far better than an
/// instruction: it learns the length, the form, and — shown only when the task has notes — that notes are
/// there to be used (shown without notes, the example's own note came back as the answer). None of them is
/// an exam question (config/exam/questions.jsonl), and none speaks of the household.
fn shots(contract: &Contract, notes: bool) -> &'static [(&'static str, &'static str)] {
    match (contract, notes) {
        (Contract::Free, false) => &[],
        (Contract::Free, true) => &[(
            "Notes:\nThe person said earlier: \"My dog is called Rex.\"\n\nWhat is my dog called?",
            "Your dog is called Rex.",
        )],
        (Contract::YesNo, _) => &[
            ("Answer yes or no: is fire hot?", "\"yes\""),
            ("Answer yes or no: is a mouse bigger than a horse?", "\"no\""),
        ],
        (Contract::Number, false) => &[(
            "Reply with only the number: how many wheels does a bicycle have?",
            "2",
        )],
        (Contract::Number, true) => &[(
            "Notes:\nThe person said earlier: \"I have 3 brothers.\"\n\nHow many brothers do I have?",
            "3",
        )],
        (Contract::Words { .. }, _) => &[("Answer with one word: what colour is snow?", "\"white\"")],
        (Contract::OneOf { .. }, _) => &[(
            "Notes:\nThe tool sort_list: Sort the items of a list.\n\nWhich tool sorts a list? Answer with the tool's name.",
            "\"sort_list\"",
        )],
    }
}

/// The index of the answer most like the others (self-consistency: Wang et al., 2022): each answer scores
/// the sum of its word-set overlaps (Jaccard, lower-cased letters and digits) with the rest, and the first of
/// the best wins. The words of the question are left out, so the vote is on what the answers say, not on the
/// question they all repeat ("The capital of Italy is …" agrees with itself whatever the city). One answer,
/// or answers that share nothing, keep the first.
pub(super) fn consensus(answers: &[String], question: &str) -> usize {
    let words = |t: &str| -> std::collections::BTreeSet<String> {
        t.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let asked = words(question);
    let sets: Vec<std::collections::BTreeSet<String>> = answers
        .iter()
        .map(|a| words(a).difference(&asked).cloned().collect())
        .collect();
    let score = |i: usize| -> f64 {
        sets.iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, b)| {
                let union = sets[i].union(b).count();
                if union == 0 {
                    0.0
                } else {
                    sets[i].intersection(b).count() as f64 / union as f64
                }
            })
            .sum()
    };
    let mut best = 0;
    for i in 1..answers.len() {
        if score(i) > score(best) {
            best = i;
        }
    }
    best
}

/// Whether `answer` takes none of the words `note` adds to `question` (a note that adds none is not ignored).
fn ignores(answer: &str, note: &str, question: &str) -> bool {
    let added = added_words(note, question);
    if added.is_empty() {
        return false;
    }
    let said = added_words(answer, question);
    added.is_disjoint(&said)
}

/// A note given as the answer: a person's words quoted as theirs (still in the note's quotation marks), anything
/// else as it stands.
fn quoted(note: &str) -> String {
    let note = note.trim();
    match note.strip_prefix(SAID_EARLIER) {
        Some(words) => format!("You told me earlier: {}", words.trim()),
        None => note.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_ignores_the_note_it_was_given_quotes_the_note() {
        let note = "The person said earlier: \"Remember that my car is painted turquoise.\"";
        let q = "What colour is my car?";
        assert!(ignores("Your car is a red car.", note, q));
        assert!(!ignores("Your car is turquoise.", note, q));
        assert_eq!(
            quoted(note),
            "You told me earlier: \"Remember that my car is painted turquoise.\""
        );
        let gate =
            "The person said earlier: \"Note for later: my flight to Lisbon leaves from gate 42.\"";
        let q = "Which gate does my flight to Lisbon leave from?";
        assert!(ignores("It leaves from gate 7.", gate, q));
        assert!(!ignores("Gate 42.", gate, q));
        // A note that adds nothing to the question is never "ignored".
        assert!(!ignores(
            "Anything.",
            "The person said earlier: \"my car\"",
            "What is my car?"
        ));
        let rule = "The household's principles (its codex) change only when the Architect, a human, approves.";
        assert_eq!(quoted(rule), rule);
        assert!(ignores(
            "Your house must approve a change.",
            rule,
            "Who must approve a change to your principles?"
        ));
    }

    #[test]
    fn the_answer_most_like_the_others_is_chosen() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(consensus(&a(&["No.", "Yes.", "Yes."]), "Is it?"), 1);
        assert_eq!(consensus(&a(&["Yes.", "No.", "Yes."]), "Is it?"), 0);
        assert_eq!(
            consensus(
                &a(&[
                    "The capital of Italy is Milan.",
                    "The capital of Italy is Rome.",
                    "Rome is the capital of Italy."
                ]),
                "What is the capital of Italy?"
            ),
            1
        );
        assert_eq!(
            consensus(&a(&["8", "20", "30"]), "How many?"),
            0,
            "nothing shared: the first"
        );
        assert_eq!(consensus(&a(&["only"]), ""), 0);
        // The question's own words do not vote: two of three name the same city in different sentences (with
        // them counted, the one that repeats most of the question won).
        assert_eq!(
            consensus(
                &a(&[
                    "The capital of Australia is the city of Sydney.",
                    "The capital is Canberra, a planned city.",
                    "Australia's capital is Canberra."
                ]),
                "What is the capital of Australia?"
            ),
            1
        );
    }
}
