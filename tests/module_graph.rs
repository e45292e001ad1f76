//! The structure the design promises, checked on the source text (no build of the organs needed):
//!
//! - no import cycle between the top-level modules of `batos-actors` (an organ, the event hub, the
//!   supervisor, ...): each is a room, each `crate::x` path in its non-test code an arrow, and the arrows
//!   must form a DAG, so the generic layers never depend on the organs above them;
//! - the wire protocol crate is a leaf (serde, serde_json, rmp-serde only);
//! - the client crate (`client/`: client library, CLI commands, TUI) depends on the protocol crate, never on
//!   the organs, and its sources name neither the organs nor the daemon crate;
//! - no import cycle between the top-level modules of the daemon crate (`src/`: boot, tree, gateway, ...).
//!
//! Each file is read whole: a `#[cfg(test)]` item is cut out wherever it sits, and the code after it is read.
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

/// The source as the compiler builds it outside tests: comments, string and char literals blanked (a path in
/// a message is not an import) and every `#[cfg(test)]` item cut out wherever it sits — a `mod tests;` line, a
/// `mod tests { .. }` block, a test-only `fn`, `use` or field — so production code *after* a test item is read
/// too (tests may reach across modules freely; production code may not).
fn production_code(src: &str) -> String {
    let code = blank_comments_and_literals(src);
    let mut out = String::with_capacity(code.len());
    let mut rest = code.as_str();
    while let Some(i) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..i]);
        rest = &rest[i + "#[cfg(test)]".len()..];
        rest = &rest[test_item_len(rest)..];
    }
    out.push_str(rest);
    out
}

/// How many bytes of `s` (the text right after a `#[cfg(test)]`) the item it marks spans: up to its `;`, its
/// `,` (a field or variant), the end of its `{ .. }` block, or the `}` that closes the enclosing one.
fn test_item_len(s: &str) -> usize {
    let mut depth = 0usize; // () and []
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            ';' | ',' if depth == 0 => return i + 1,
            '}' if depth == 0 => return i,
            '{' if depth == 0 => {
                let mut braces = 0usize;
                for (j, d) in s[i..].char_indices() {
                    match d {
                        '{' => braces += 1,
                        '}' => {
                            braces -= 1;
                            if braces == 0 {
                                return i + j + 1;
                            }
                        }
                        _ => {}
                    }
                }
                return s.len();
            }
            _ => {}
        }
    }
    s.len()
}

/// `src` with the text of comments and of string, raw-string and char literals replaced by spaces (newlines
/// kept), so braces and `crate::` inside them are not seen. Lifetimes (`'a`) are left alone.
fn blank_comments_and_literals(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let ident_before = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0usize;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && !ident_before && matches!(next, Some('"') | Some('#')) && {
            let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
            chars.get(i + 1 + hashes) == Some(&'"')
        } {
            let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
            out.push(' ');
            i += 1 + hashes + 1;
            out.push_str(&" ".repeat(hashes + 1));
            while i < chars.len() {
                if chars[i] == '"'
                    && chars[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == '#')
                        .count()
                        == hashes
                {
                    out.push_str(&" ".repeat(hashes + 1));
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if let Some(&d) = chars.get(i) {
                    out.push(blank(d));
                }
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A char literal ('x', '{', '\n', '\u{..}'); a lifetime has no closing quote right after.
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
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
    module_graph(&root().join("actors/src"))
}

/// Module → modules it imports, for the top-level modules of the crate whose sources are `src` (the crate
/// root, `lib.rs` or `main.rs`, declares them and is no room).
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(src).ok()?;
            let first = rel.components().next()?.as_os_str().to_str()?;
            Some(first.trim_end_matches(".rs").to_string())
        })
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(src).expect("under src");
        let Some(module) = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs").to_string())
        else {
            continue;
        };
        // Unit tests (a `tests.rs` or a `tests/` folder, declared `#[cfg(test)]` by their parent) build rigs
        // from whatever they need; they are not the shape of the house.
        let is_test =
            rel.ends_with("tests.rs") || rel.components().any(|c| c.as_os_str() == "tests");
        if module == "lib" || module == "main" || is_test {
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

/// The organs of `batos-actors`: each a folder with its actor, messages, handle and essay.
const ORGANS: [&str; 12] = [
    "cluster",
    "codex",
    "curator",
    "exam",
    "image",
    "life",
    "memory",
    "motivator",
    "orchestrator",
    "personas",
    "tools",
    "trainer",
];

/// The organ → organ imports that are real (README, "How it is built", says why each is): an organ that
/// drives another's work (the exam and a life drive the household; the image holds memory's rows; the
/// orchestrator runs tools; the trainer reads the Curator's datasets) or holds the personas themselves (the
/// orchestrator's task snapshots, the codex's reloads, the trainer's swaps, the exam's bare model, the image's
/// editable state), or does another's work on another machine (a worker node's sandbox pool and training run,
/// the cluster organ's). An organ that only asks a persona to think holds the `Think` port instead. Every other
/// conversation between organs goes through a port on the `ports` floor.
const REAL_ORGAN_EDGES: &[(&str, &str)] = &[
    ("cluster", "tools"),
    ("cluster", "trainer"),
    ("codex", "personas"),
    ("exam", "curator"),
    ("exam", "memory"),
    ("exam", "personas"),
    ("exam", "tools"),
    ("image", "memory"),
    ("image", "personas"),
    ("life", "codex"),
    ("life", "exam"),
    ("life", "tools"),
    ("life", "trainer"),
    ("orchestrator", "personas"),
    ("orchestrator", "tools"),
    ("trainer", "curator"),
    ("trainer", "personas"),
];

#[test]
fn organs_import_each_other_only_where_the_readme_says_why() {
    let graph = actor_module_graph();
    let mut edges = Vec::new();
    for (from, deps) in &graph {
        for to in deps {
            if ORGANS.contains(&from.as_str()) && ORGANS.contains(&to.as_str()) {
                edges.push((from.as_str(), to.as_str()));
            }
        }
    }
    let unexplained: Vec<_> = edges
        .iter()
        .filter(|e| !REAL_ORGAN_EDGES.contains(e))
        .collect();
    assert!(
        unexplained.is_empty(),
        "organ → organ imports without a reason (speak through a port in actors/src/ports/, or add the \
         edge to REAL_ORGAN_EDGES and the README with why): {unexplained:?}"
    );
    println!("{} organ → organ imports: {edges:?}", edges.len());
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
        "ports",
        "principles",
        "settings",
        "supervisor",
    ] {
        let organs = ORGANS;
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
    // Production code after a test item is read; the test item, comments and literals are not.
    let src = r##"
use crate::ask::find;
#[cfg(test)]
mod tests {
    use crate::memory::X;
    fn f() { let s = "}"; let c = '}'; }
}
#[cfg(test)]
use crate::image::Y;
struct S {
    #[cfg(test)]
    probe: crate::tools::Probe,
    real: crate::events::Event,
}
const M: &str = "crate::codex is named in a message";
const R: &str = r#"a raw "crate::curator" string"#;
fn g<'a>(x: &'a str) -> crate::job::Job { /* crate::life */ todo!() }
"##;
    assert_eq!(
        crate_refs(&production_code(src)),
        ["ask", "events", "job"].map(String::from).into()
    );
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
    // The client crate (client library, CLI commands, TUI) depends on the protocol crate and general crates
    // only: Cargo then guarantees it builds without the engine, and its sources cannot name the organs.
    let manifest = fs::read_to_string(root().join("client/Cargo.toml")).expect("client manifest");
    for banned in [
        "batos-actors",
        "batos_actors",
        "path = \"..\"",
        "lancedb",
        "llama-cpp",
    ] {
        assert!(
            !manifest.contains(banned),
            "client/Cargo.toml must not depend on the engine, found `{banned}`"
        );
    }
    let mut sources = Vec::new();
    rust_files(&root().join("client/src"), &mut sources);
    assert!(
        sources.len() >= 10,
        "expected the client crate's sources, found {sources:?}"
    );
    for path in sources {
        let text = fs::read_to_string(&path).expect("client source");
        for (i, line) in text.lines().enumerate() {
            for banned in ["batos_actors", "batos::"] {
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

#[test]
fn the_daemon_crate_imports_its_modules_without_a_cycle() {
    let graph = module_graph(&root().join("src"));
    assert!(
        graph.contains_key("boot") && graph.contains_key("gateway"),
        "expected the daemon's modules in src/, found {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle between modules of the daemon crate: {}\nfull graph: {graph:#?}",
            cycle.join(" → ")
        );
    }
}
