//! The codex side of a philosophical inquiry: a persona proposes a structured amendment, which is stored as
//! pending. The proposal is data; only the Architect's approval commits it.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::amend::{proposal_schema, Changes, Proposal};
use super::CodexHandle;
use crate::ask::OrganError;
use crate::llm::{ChatMessage, Role};
use crate::personas::{Personas, ThinkRequest};
use crate::ports::{InquiryHook, PortError, TaskState};

/// Opens inquiries through the codex organ: the orchestrator's [`InquiryHook`] port, plugged in at boot.
pub struct CodexLink {
    /// Who is asked.
    pub personas: Arc<Personas>,
    /// The proposing persona (`codex.proposer`).
    pub proposer: String,
    /// The codex organ, which validates and stores the proposal as pending.
    pub codex: CodexHandle,
}

/// Reads a proposal out of a model's JSON, ignoring anything beyond the schema.
pub fn parse_proposal(text: &str) -> Result<Proposal, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("the proposal is not JSON: {e}"))?;
    let s = |k: &str| {
        v["changes"]
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .filter(|x| !x.trim().is_empty())
    };
    let principles = v["changes"]
        .get("principles")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect::<Vec<_>>()
        });
    Ok(Proposal {
        persona: v["persona"].as_str().unwrap_or_default().to_string(),
        changes: Changes {
            role: s("role"),
            system_prompt: s("system_prompt"),
            principles: principles.filter(|p| !p.is_empty()),
        },
        rationale: v["rationale"].as_str().unwrap_or_default().to_string(),
    })
}

#[async_trait]
impl InquiryHook for CodexLink {
    async fn open(&self, task: &TaskState) -> Result<String, PortError> {
        let current = self.codex.get().await.map_err(PortError::from)?;
        let mut prompt = format!(
            "A task has kept a dissonance of {:.2} after {} drafting rounds.\nTask: {}\n",
            task.dissonance.unwrap_or(0.0),
            task.iteration,
            task.text
        );
        for c in task.critiques.iter().rev().take(2) {
            prompt.push_str(&format!("Critique: {c}\n"));
        }
        prompt.push_str("\nThe current codex:\n");
        for (name, p) in &current.personas {
            prompt.push_str(&format!(
                "{name}: role: {}; principles: {}\n",
                p.role,
                p.principles.join(" | ")
            ));
        }
        prompt.push_str(
            "\nPropose one amendment to one persona's codex entry that would resolve this tension: which persona, \
             the new values of the fields to change (role, system_prompt and/or principles), and your rationale. \
             The Architect will approve or reject it.",
        );
        let req = ThinkRequest {
            messages: vec![ChatMessage::new(Role::User, prompt)],
            tools: Vec::new(),
            format: Some(proposal_schema()),
            tokens: None,
            sample: 0,
        };
        let thought = self
            .personas
            .think(&self.proposer, req)
            .await
            .map_err(|e| PortError::Refused(format!("no proposal: {e}")))?;
        let proposal = parse_proposal(&thought.response.content).map_err(PortError::Refused)?;
        let amendment = self
            .codex
            .propose(proposal, Some(task.id.clone()))
            .await
            .map_err(|e| match e {
                OrganError::Unreachable(a) => PortError::Unreachable(a),
                OrganError::Refused(r) => {
                    PortError::Refused(format!("the proposal was refused: {r}"))
                }
            })?;
        Ok(amendment.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposals_are_read_leniently_but_completely() {
        let p = parse_proposal(r#"{"persona":"BRICK","changes":{"system_prompt":"You are BRICK. Care.","principles":[],"mood":"x"},"rationale":"r","extra":1}"#).unwrap();
        assert_eq!(p.persona, "BRICK");
        assert_eq!(
            p.changes.system_prompt.as_deref(),
            Some("You are BRICK. Care.")
        );
        assert!(p.changes.principles.is_none());
        assert!(parse_proposal("nope").is_err());
    }
}
