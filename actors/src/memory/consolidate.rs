//! Consolidation: the background pass that turns loose detail rows into a hierarchy. Unparented details
//! are grouped (by task first, then by similarity of the groups' centroids, up to `group_max` rows), each
//! group gets a summary row written by the summary persona, and its details are re-parented under it — the summary and
//! the re-parenting are one LanceDB commit (`store::adopt`), so a stop never leaves one without the other.
//! Retrieval depends on this: stage 1 searches summaries only and stage 2 only their children, so details
//! that are never consolidated are found only through the (small, exact) "recent" query. A model outage
//! must not stall the pass, so a summary falls back to the joined details. Runs as a job of the memory
//! actor, one pass at a time (the actor's `consolidating` flag).

use std::collections::HashMap;

use super::ctx::{now_micros, Ctx, Store, UNPARENTED};
use super::store::{self, NewRow};
use super::{ConsolidateReport, MemError};
use crate::events::Event;
use crate::llm::{ChatMessage, Role};
use crate::ports::ThinkRequest;
use crate::settings::MemorySettings;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// Groups unparented details: by task first, then merges groups whose centroids are similar.
pub(crate) fn group(
    rows: Vec<store::Scanned>,
    merge_similarity: f32,
    max: usize,
) -> Vec<Vec<store::Scanned>> {
    let mut by_task: Vec<Vec<store::Scanned>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for r in rows {
        match r.hit.task_id.clone() {
            Some(t) => match index.get(&t) {
                Some(&i) => by_task[i].push(r),
                None => {
                    index.insert(t, by_task.len());
                    by_task.push(vec![r]);
                }
            },
            None => by_task.push(vec![r]),
        }
    }
    let centroid = |g: &[store::Scanned]| {
        let dim = g.first().map(|x| x.vector.len()).unwrap_or(0);
        let mut c = vec![0f32; dim];
        for r in g {
            for (a, b) in c.iter_mut().zip(&r.vector) {
                *a += b;
            }
        }
        c
    };
    let mut groups: Vec<Vec<store::Scanned>> = Vec::new();
    for g in by_task {
        let c = centroid(&g);
        let target = groups.iter().position(|existing| {
            existing.len() + g.len() <= max && cosine(&centroid(existing), &c) >= merge_similarity
        });
        match target {
            Some(i) => groups[i].extend(g),
            None => groups.push(g),
        }
    }
    groups
}

pub(super) async fn consolidate(
    ctx: &Ctx,
    store: &Store,
    forced: bool,
) -> Result<ConsolidateReport, MemError> {
    let s = ctx.settings();
    let rows = store::scan(&store.table, UNPARENTED, s.consolidate_batch).await?;
    if rows.is_empty() || (!forced && rows.len() < s.consolidate_min_details) {
        return Ok(ConsolidateReport::default());
    }
    let mut report = ConsolidateReport::default();
    let adopted = adopt_groups(ctx, store, &s, rows, &mut report).await;
    // Once per pass, failed or not: whatever was committed reaches the families.
    store.refresh_families(ctx.family_bytes()).await;
    adopted?;
    let rows = store::count(&store.table, None).await?;
    tracing::info!(
        event = "memory.consolidated",
        summaries = report.summaries,
        details = report.details,
        rows,
        "consolidation pass"
    );
    ctx.args.hub.publish(Event::MemoryUpdated {
        what: format!(
            "consolidated {} details under {} summaries",
            report.details, report.summaries
        ),
        rows,
    });
    Ok(report)
}

/// Summarises each group of `rows` and commits it under its summary, counting into `report`.
async fn adopt_groups(
    ctx: &Ctx,
    store: &Store,
    s: &MemorySettings,
    rows: Vec<store::Scanned>,
    report: &mut ConsolidateReport,
) -> Result<(), MemError> {
    for g in group(rows, s.merge_similarity, s.group_max) {
        let summary = summarise(ctx, s, &g).await?;
        let vector = ctx
            .embed(std::slice::from_ref(&summary))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| MemError::Embed("no embedding".into()))?;
        let sid = uuid::Uuid::new_v4().simple().to_string();
        let tasks: Vec<&str> = g.iter().filter_map(|r| r.hit.task_id.as_deref()).collect();
        let row = NewRow {
            id: sid.clone(),
            parent_id: None,
            kind: "summary",
            text: summary,
            vector,
            persona: s.summary_persona.clone(),
            task_id: (tasks.len() == 1).then(|| tasks[0].to_string()),
            created_at: now_micros(),
        };
        // One commit for the summary and its children: a stop leaves both or neither.
        let adopted = store::adopt(&store.table, &row, &g, store.dim).await?;
        store.remember_summary(&row);
        report.summaries += 1;
        report.details += adopted as usize;
    }
    Ok(())
}

/// Asks the summary persona for a summary; if it cannot think right now, the details are joined instead so
/// consolidation never stalls on a model outage.
async fn summarise(
    ctx: &Ctx,
    s: &MemorySettings,
    group: &[store::Scanned],
) -> Result<String, MemError> {
    let mut prompt = String::from(
        "Summarise these memories in two or three sentences, keeping names and facts:\n",
    );
    for r in group {
        prompt.push_str(&format!("- {}\n", r.hit.text));
    }
    let req = ThinkRequest {
        messages: vec![ChatMessage::new(Role::User, prompt)],
        tools: Vec::new(),
        format: None,
        tokens: None,
        sample: 0,
    };
    match ctx.args.personas.think(&s.summary_persona, req).await {
        Ok(t) if !t.response.content.trim().is_empty() => Ok(t.response.content),
        _ => {
            tracing::warn!(
                event = "memory.summary_fallback",
                "summary persona unavailable; joining the details"
            );
            Ok(group
                .iter()
                .map(|r| r.hit.text.as_str())
                .collect::<Vec<_>>()
                .join(" · "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, task: Option<&str>, vector: Vec<f32>) -> store::Scanned {
        store::Scanned {
            hit: store::Hit {
                id: id.into(),
                parent_id: None,
                kind: "detail".into(),
                text: id.into(),
                task_id: task.map(str::to_string),
                score: 0.0,
                persona: "BABS".into(),
            },
            vector,
            persona: "BABS".into(),
            created_at: 1,
        }
    }

    #[test]
    fn grouping_by_task_then_similarity() {
        let rows = vec![
            row("a1", Some("A"), vec![1.0, 0.0]),
            row("b1", Some("B"), vec![0.0, 1.0]),
            row("a2", Some("A"), vec![1.0, 0.1]),
            row("c1", Some("C"), vec![0.95, 0.05]),
        ];
        let groups = group(rows, 0.9, 8);
        let ids: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(|r| r.hit.id.as_str()).collect())
            .collect();
        assert_eq!(ids, vec![vec!["a1", "a2", "c1"], vec!["b1"]]);
        let rows = vec![
            row("a1", Some("A"), vec![1.0, 0.0]),
            row("c1", Some("C"), vec![1.0, 0.0]),
        ];
        assert_eq!(group(rows, 0.9, 1).len(), 2, "group_max caps merges");
    }
}
