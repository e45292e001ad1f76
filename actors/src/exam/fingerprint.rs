//! What was examined: each persona's model (and its adapter file's digest), the tool registry, the codex as
//! the personas hold it, the memory table's version, the settings. Taken when a run starts.

use batos_protocol::exam::{Fingerprint, MemoryPrint, PersonaPrint};
use sha2::{Digest, Sha256};

use super::ExamArgs;
use crate::llm::embedded::LORA_PREFIX;

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-256 of a file, streamed; `None` when it cannot be read.
fn file_sha256(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Some(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The fingerprint of the household as it stands now.
pub async fn fingerprint(args: &ExamArgs) -> Fingerprint {
    let mut personas = std::collections::BTreeMap::new();
    let mut codex = Vec::new();
    for name in crate::PERSONAS {
        let model = args
            .personas
            .current(name)
            .map(|h| h.model.clone())
            .unwrap_or_default();
        let adapter_sha256 = model
            .strip_prefix(LORA_PREFIX)
            .and_then(|p| file_sha256(std::path::Path::new(p)));
        if let Some(c) = args.personas.config(name) {
            codex.extend(serde_json::to_vec(&(&c.codex, &c.editable)).unwrap_or_default());
        }
        personas.insert(
            name.to_string(),
            PersonaPrint {
                model,
                adapter_sha256,
            },
        );
    }
    let tools = args.tools.list();
    let tool_names = tools
        .iter()
        .map(|t| format!("{} v{}", t.name, t.version))
        .collect();
    let memory = match &args.memory {
        Some(m) => m.snapshot(false).await.ok().map(|s| MemoryPrint {
            version: s.version,
            rows: s.rows,
        }),
        None => None,
    };
    let settings = serde_json::to_vec(&**args.settings.load()).unwrap_or_default();
    Fingerprint {
        backend: format!("{} {}", args.backend.kind(), args.backend.location()),
        personas,
        tools: hex(&serde_json::to_vec(&tools).unwrap_or_default()),
        tool_names,
        codex: hex(&codex),
        memory,
        settings: hex(&settings),
    }
}
