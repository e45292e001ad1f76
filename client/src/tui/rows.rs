//! The rows each list screen of the TUI shows (tasks, amendments, exam runs, tools), read from the command
//! replies the [`App`] keeps: filtered and ordered here, so the screens only draw and the keys only move a
//! selection over the same rows.

use serde_json::{json, Value};

use std::collections::BTreeSet;

use super::app::{App, Screen};

impl App {
    /// Task ids newest first, filtered.
    pub fn task_rows(&self) -> Vec<(String, Value)> {
        let mut rows: Vec<(String, Value)> = self
            .replies
            .get("tasks")
            .and_then(|v| v["tasks"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|t| Some((t["id"].as_str()?.to_string(), t.clone())))
            .collect();
        // Tasks the fold knows that the last list did not have yet (submitted since).
        let listed: BTreeSet<String> = rows.iter().map(|(id, _)| id.clone()).collect();
        for (id, t) in &self.state.tasks {
            if !listed.contains(id) {
                let (text, origin) = self.task_text.get(id).cloned().unwrap_or_default();
                rows.push((id.clone(), json!({"id": id, "status": t.status, "text": text, "origin": origin, "steps": t.steps, "dissonance": t.dissonance})));
            }
        }
        rows.sort_by(|a, b| {
            b.1["created_at"]
                .as_f64()
                .partial_cmp(&a.1["created_at"].as_f64())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let f = self.filter.to_lowercase();
        rows.retain(|(id, t)| {
            f.is_empty()
                || id.contains(&f)
                || t["text"]
                    .as_str()
                    .is_some_and(|s| s.to_lowercase().contains(&f))
                || t["status"].as_str().is_some_and(|s| s.contains(&f))
        });
        rows
    }

    /// The selected task's id.
    pub fn selected_task(&self) -> Option<String> {
        let rows = self.task_rows();
        rows.get(self.selected[Screen::Tasks.index()].min(rows.len().saturating_sub(1)))
            .map(|(id, _)| id.clone())
    }

    /// Amendments, pending first.
    pub fn amendment_rows(&self) -> Vec<Value> {
        let mut rows: Vec<Value> = self
            .replies
            .get("amendments")
            .and_then(|v| v["amendments"].as_array())
            .cloned()
            .unwrap_or_default();
        rows.sort_by_key(|a| a["status"] != "pending");
        rows
    }

    /// Exam runs, newest first.
    pub fn exam_rows(&self) -> Vec<Value> {
        let mut rows: Vec<Value> = self
            .replies
            .get("exams")
            .and_then(|v| v["exams"].as_array())
            .cloned()
            .unwrap_or_default();
        rows.reverse();
        rows
    }

    /// Tools, filtered.
    pub fn tool_rows(&self) -> Vec<Value> {
        let f = self.filter.to_lowercase();
        self.replies
            .get("tools")
            .and_then(|v| v["tools"].as_array())
            .into_iter()
            .flatten()
            .filter(|t| f.is_empty() || t["name"].as_str().is_some_and(|n| n.contains(&f)))
            .cloned()
            .collect()
    }
}
