//! The structure the design promises, checked on the source text (no build of the organs needed):
//!
//! - no import cycle between the top-level modules of `batos-actors` (an organ, the event hub, the
//!   supervisor, ...): each is a room, each `crate::x` path in its non-test code an arrow, and the arrows
//!   must form a DAG, so the generic layers never depend on the organs above them;
//! - the wire protocol crate is a leaf (serde, serde_json, rmp-serde only);
//! - the client and the TUI speak only the protocol crate: `src/client.rs` and `src/tui/` name no organ.
//!
//! A failure names the cycle or the offending line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable source dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The source without its `#[cfg(test)]` items and comments: tests may reach across modules freely.
fn production_code(src: &str) -> String {
    let src = match src.find("\n#[cfg(test)]") {
        Some(i) => &src[..i],
        None => src,
    };
    src.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `crate::<module>` names a source text refers to.
fn crate_refs(src: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = src;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// Module → modules it imports, for the top-level modules of `actors/src`.
fn actor_module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("actors/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(&src).ok()?;
            let first = rel.components().next()?.as_os_str().to_str()?;
            Some(first.trim_end_matches(".rs").to_string())
        })
        .filter(|m| m != "lib")
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).expect("under src");
        let Some(module) = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs").to_string())
        else {
            continue;
        };
        if module == "lib" || rel.ends_with("tests.rs") {
            continue;
        }
        let text = fs::read_to_string(f).expect("readable source");
        let deps = graph.entry(module.clone()).or_default();
        for r in crate_refs(&production_code(&text)) {
            if r != module && modules.contains(&r) {
                deps.insert(r);
            }
        }
    }
    graph
}

/// A cycle in `graph`, as the path that closes it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|x| x == m).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn the_organs_import_each_other_without_a_cycle() {
    let graph = actor_module_graph();
    assert!(
        graph.len() >= 10,
        "expected the organs of actors/src, found {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle between modules of batos-actors: {}\nfull graph: {graph:#?}",
            cycle.join(" → ")
        );
    }
    // The layers that everything stands on depend on no organ.
    for base in [
        "ask",
        "events",
        "fsutil",
        "job",
        "principles",
        "settings",
        "supervisor",
    ] {
        let organs = [
            "codex",
            "curator",
            "image",
            "memory",
            "motivator",
            "orchestrator",
            "personas",
            "tools",
            "unsloth",
        ];
        let bad: Vec<_> = graph[base]
            .iter()
            .filter(|d| organs.contains(&d.as_str()))
            .collect();
        assert!(bad.is_empty(), "`{base}` must not import organs: {bad:?}");
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default();
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        crate_refs("use crate::events::Event; crate::ask::find(); // crate::x"),
        ["ask", "events", "x"].map(String::from).into()
    );
    assert!(!crate_refs(&production_code("x(); // crate::memory")).contains("memory"));
}

#[test]
fn the_protocol_crate_is_a_leaf_and_the_client_needs_only_it() {
    let manifest =
        fs::read_to_string(root().join("protocol/Cargo.toml")).expect("protocol manifest");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .expect("a [dependencies] table")
        .split("\n[")
        .next()
        .unwrap_or_default();
    let names: Vec<&str> = deps
        .lines()
        .filter_map(|l| l.split(['=', '.']).next())
        .map(str::trim)
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .collect();
    for n in &names {
        assert!(
            ["serde", "serde_json", "rmp-serde"].contains(n),
            "batos-protocol must stay serde-only, found dependency `{n}`"
        );
    }
    // The client and the TUI speak the protocol only: neither names the organs crate, nor the daemon's side.
    let mut sources = vec![root().join("src/client.rs")];
    for e in fs::read_dir(root().join("src/tui"))
        .expect("src/tui")
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "rs") {
            sources.push(e.path());
        }
    }
    for path in sources {
        let text = fs::read_to_string(&path).expect("client source");
        for (i, line) in text.lines().enumerate() {
            for banned in [
                "batos_actors",
                "crate::gateway",
                "crate::boot",
                "crate::tree",
            ] {
                assert!(
                    !line.contains(banned),
                    "{}:{} names `{banned}`: {line}",
                    path.display(),
                    i + 1
                );
            }
        }
    }
}
