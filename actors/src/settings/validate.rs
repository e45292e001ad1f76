//! The checks run on every parsed settings file: formats, ranges and consistency between keys. Each failure
//! names the dotted key it is about.

use std::path::Path;

use super::{Settings, SettingsError};

/// Returns `$bad("section.key", ..)` for the first listed key of `$s` that is 0; the key is spelled once, as
/// the field path, and stringified for the error.
macro_rules! positive {
    ($s:ident, $bad:ident, $($first:ident $(. $rest:ident)+),+ $(,)?) => {
        $(
            if $s.$first $(.$rest)+ == 0 {
                return Err($bad(
                    concat!(stringify!($first) $(, ".", stringify!($rest))+),
                    "must be greater than 0",
                ));
            }
        )+
    };
}

impl Settings {
    /// Range and consistency checks; the error names the first offending key.
    pub(super) fn validate(&self, path: &Path) -> Result<(), SettingsError> {
        let bad = |key: &str, message: &str| SettingsError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message: message.to_string(),
        };
        for (key, ep) in [
            ("gateway.command_endpoint", &self.gateway.command_endpoint),
            ("gateway.event_endpoint", &self.gateway.event_endpoint),
        ] {
            match tcp_endpoint(ep) {
                Err(why) => return Err(bad(key, &why)),
                // Clear text may only be offered where nobody else can listen.
                Ok(addr)
                    if !addr.ip().is_loopback()
                        && self.gateway.curve != super::CurveMode::Required =>
                {
                    return Err(bad(
                        "gateway.curve",
                        &format!(
                            "must be \"required\" when {key} binds {} (not a loopback address): \
                             tokens, tasks and answers would cross the network in clear text",
                            addr.ip()
                        ),
                    ));
                }
                Ok(_) => {}
            }
        }
        if self.gateway.peer_ping_ms >= self.gateway.peer_timeout_ms {
            return Err(bad(
                "gateway.peer_ping_ms",
                "must be below gateway.peer_timeout_ms (a peer is pinged before it is dropped)",
            ));
        }
        if self.gateway.front_max_frame_bytes < self.gateway.max_request_bytes as u64 {
            return Err(bad(
                "gateway.front_max_frame_bytes",
                "must be at least gateway.max_request_bytes",
            ));
        }
        positive!(
            self,
            bad,
            gateway.heartbeat_ms,
            gateway.dedupe_window_ms,
            gateway.dedupe_capacity,
            gateway.dedupe_max_bytes,
            gateway.max_request_bytes,
            gateway.event_queue_capacity,
            gateway.max_inflight_commands,
            gateway.actor_call_timeout_ms,
            gateway.front_max_control_bytes,
            gateway.front_max_frames,
            gateway.handshake_timeout_ms,
            gateway.max_connections,
            gateway.max_pending_connections,
            gateway.peer_ping_ms,
            gateway.peer_timeout_ms,
            client.timeout_ms,
            client.poll_ms,
            supervision.period_ms,
            supervision.shutdown_timeout_ms,
            llm.probe_timeout_ms,
            llm.request_timeout_ms,
            llm.sampling.max_tokens,
            llm.embedded.n_ctx,
            llm.embedded.n_batch,
            llm.embedded.parallel,
            llm.embedded.max_queued,
            orchestrator.max_concurrent_tasks,
            orchestrator.max_iterations,
            orchestrator.keep_finished_tasks,
            orchestrator.max_steps,
            orchestrator.max_task_bytes,
            orchestrator.persona_retry_backoff_ms,
            orchestrator.persona_retry_backoff_max_ms,
            orchestrator.research_max_bytes,
            memory.chunk_chars,
            memory.k_summaries,
            memory.k_details,
            memory.max_k,
            memory.nprobes,
            memory.index_min_rows,
            memory.consolidate_interval_ms,
            memory.consolidate_batch,
            memory.group_max,
            memory.call_timeout_ms,
            memory.reopen_backoff_ms,
            codex.keep_backups,
            codex.keep_decided_amendments,
            codex.resume_wait_ms,
            tools.memory_mb,
            tools.max_sandboxes,
            tools.pids_limit,
            tools.tmpfs_mb,
            tools.nofile,
            tools.timeout_ms,
            tools.max_output_bytes,
            tools.max_attempts,
            tools.max_source_bytes,
            tools.forge_timeout_ms,
            codex.reload_debounce_ms,
            curator.max_answer_chars,
            curator.shingle_words,
            curator.minhash_hashes,
            curator.lsh_bands,
            curator.min_new_examples,
            curator.judge_max_bytes,
            curator.idle_poll_ms,
            curator.write_retry_ms,
            orchestrator.settle_tries,
            orchestrator.settle_retry_ms,
            trainer.threads,
            trainer.rank,
            trainer.steps,
            trainer.batch,
            trainer.max_tokens,
            trainer.pack_tokens,
            trainer.idle_poll_ms,
            motivator.tick_ms,
            motivator.failure_count,
            motivator.failure_window_s,
            motivator.success_streak,
            motivator.running_goals,
            motivator.max_goal_bytes,
            image.seq_reserve,
            image.tick_ms,
            exam.question_timeout_ms,
            exam.teach_timeout_ms,
            exam.remember_timeout_ms,
            exam.poll_ms,
            exam.keep_results,
            exam.max_questions,
            exam.max_run_ms,
            life.poll_ms,
            life.max_tasks,
            life.max_run_s,
            life.max_task_tokens,
            life.task_timeout_ms,
            life.trainer_steps,
            life.min_new_examples,
            life.keep,
            trainer.exam_gate_wait_ms,
            http.login_link_ttl_ms,
            http.session_max_age_s,
            http.chat_timeout_ms,
            http.max_event_streams,
        );
        if let Err((key, why)) = self.cluster.check() {
            return Err(bad(key, &why));
        }
        match self.http.addr() {
            Err(why) => return Err(bad("http.bind", &why)),
            // The HTTP door speaks no TLS: off the loopback only when someone said so, knowing it.
            Ok(addr) if !addr.ip().is_loopback() && !self.http.allow_non_loopback => {
                return Err(bad(
                    "http.bind",
                    &format!(
                        "binds {} (not a loopback address) and this door speaks plain HTTP: put a \
                         TLS-terminating proxy in front and set http.allow_non_loopback = true",
                        addr.ip()
                    ),
                ));
            }
            Ok(_) => {}
        }
        if self.http.model_name.trim().is_empty() {
            return Err(bad("http.model_name", "must not be empty"));
        }
        for (key, v) in [
            ("trainer.exam_tolerance", self.trainer.exam_tolerance),
            ("life.rollback_points", self.life.rollback_points),
        ] {
            if !(0.0..=100.0).contains(&v) {
                return Err(bad(
                    key,
                    "must be between 0 and 100 (points of the share right)",
                ));
            }
        }
        for (key, v) in [
            (
                "orchestrator.dissonance_threshold",
                self.orchestrator.dissonance_threshold,
            ),
            (
                "orchestrator.inquiry_threshold",
                self.orchestrator.inquiry_threshold,
            ),
            ("llm.top_p", f64::from(self.llm.sampling.top_p)),
            ("llm.min_p", f64::from(self.llm.sampling.min_p)),
            (
                "orchestrator.critique_repeat_similarity",
                self.orchestrator.critique_repeat_similarity,
            ),
            ("curator.max_dissonance", self.curator.max_dissonance),
            ("curator.near_duplicate", self.curator.near_duplicate),
            ("trainer.dropout", f64::from(self.trainer.dropout)),
            ("trainer.min_improvement", self.trainer.min_improvement),
            ("trainer.max_regression", self.trainer.max_regression),
            (
                "motivator.dissonance_threshold",
                self.motivator.dissonance_threshold,
            ),
            (
                "motivator.streak_max_dissonance",
                self.motivator.streak_max_dissonance,
            ),
            (
                "motivator.duplicate_similarity",
                self.motivator.duplicate_similarity,
            ),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(key, "must be between 0 and 1"));
            }
        }
        if self.tools.cpus.is_nan() || self.tools.cpus <= 0.0 {
            return Err(bad("tools.cpus", "must be greater than 0"));
        }
        if !crate::PERSONAS.contains(&self.codex.proposer.as_str()) {
            return Err(bad(
                "codex.proposer",
                "must be ALFRED, BABS, BRICK or ROBIN",
            ));
        }
        if self.image.keep < 2 {
            return Err(bad(
                "image.keep",
                "must be at least 2 (a corrupt newest image needs a predecessor)",
            ));
        }
        if !crate::PERSONAS.contains(&self.exam.bare_persona.as_str()) {
            return Err(bad(
                "exam.bare_persona",
                "must be ALFRED, BABS, BRICK or ROBIN",
            ));
        }
        if !crate::PERSONAS.contains(&self.motivator.persona.as_str()) {
            return Err(bad(
                "motivator.persona",
                "must be ALFRED, BABS, BRICK or ROBIN",
            ));
        }
        if let Some((kind, _)) = self
            .motivator
            .importance
            .iter()
            .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
        {
            return Err(bad(
                &format!("motivator.importance.{kind}"),
                "must be a number of 0 or more",
            ));
        }
        if !(self.motivator.importance_threshold > 0.0
            && self.motivator.importance_threshold.is_finite())
        {
            return Err(bad(
                "motivator.importance_threshold",
                "must be greater than 0",
            ));
        }
        if !crate::PERSONAS.contains(&self.curator.judge.as_str()) {
            return Err(bad("curator.judge", "must be ALFRED, BABS, BRICK or ROBIN"));
        }
        if self.trainer.targets.is_empty() {
            return Err(bad("trainer.targets", "must name at least one projection"));
        }
        if !["cosine", "constant"].contains(&self.trainer.schedule.as_str()) {
            return Err(bad("trainer.schedule", "must be cosine or constant"));
        }
        if !(self.trainer.lr > 0.0 && self.trainer.lr.is_finite()) {
            return Err(bad("trainer.lr", "must be greater than 0"));
        }
        if !(self.trainer.max_epochs >= 0.0 && self.trainer.max_epochs.is_finite()) {
            return Err(bad(
                "trainer.max_epochs",
                "must be 0 (no bound) or a number of passes greater than 0",
            ));
        }
        let c = &self.curator;
        if !c.minhash_hashes.is_multiple_of(c.lsh_bands) {
            return Err(bad(
                "curator.minhash_hashes",
                "must be a multiple of curator.lsh_bands",
            ));
        }
        if c.min_answer_chars > c.max_answer_chars {
            return Err(bad(
                "curator.min_answer_chars",
                "must not exceed curator.max_answer_chars",
            ));
        }
        if c.min_score > 5 {
            return Err(bad("curator.min_score", "must be between 0 and 5"));
        }
        if c.heldout_percent > 100 {
            return Err(bad("curator.heldout_percent", "must be between 0 and 100"));
        }
        if !(1..=5).contains(&c.human_reject_at_most)
            || !(1..=5).contains(&c.human_accept_at_least)
            || c.human_reject_at_most >= c.human_accept_at_least
        {
            return Err(bad(
                "curator.human_reject_at_most",
                "human_reject_at_most and human_accept_at_least must be in 1..=5, the first below the second",
            ));
        }
        const CURATED: &[&str] = &["route", "research", "draft", "critique", "synthesize"];
        if let Some(n) = c.nodes.iter().find(|n| !CURATED.contains(&n.as_str())) {
            return Err(bad(
                "curator.nodes",
                &format!(
                    "unknown node `{n}`; curated nodes are {}",
                    CURATED.join(", ")
                ),
            ));
        }
        if !crate::PERSONAS.contains(&self.memory.summary_persona.as_str()) {
            return Err(bad(
                "memory.summary_persona",
                "must be ALFRED, BABS, BRICK or ROBIN",
            ));
        }
        if self.memory.reindex_growth.is_nan() || self.memory.reindex_growth < 1.0 {
            return Err(bad("memory.reindex_growth", "must be at least 1.0"));
        }
        if self.orchestrator.inquiry_threshold < self.orchestrator.dissonance_threshold {
            return Err(bad(
                "orchestrator.inquiry_threshold",
                "must be at least orchestrator.dissonance_threshold",
            ));
        }
        if self.llm.sampling.temperature.is_nan() || self.llm.sampling.temperature < 0.0 {
            return Err(bad("llm.temperature", "must be 0 or more"));
        }
        for (key, v) in [
            ("llm.repeat_penalty", self.llm.sampling.repeat_penalty),
            ("llm.dry_base", self.llm.sampling.dry_base),
        ] {
            if v.is_nan() || v < 1.0 {
                return Err(bad(key, "must be at least 1.0"));
            }
        }
        if self.llm.sampling.dry_multiplier.is_nan() || self.llm.sampling.dry_multiplier < 0.0 {
            return Err(bad("llm.dry_multiplier", "must be 0 or more"));
        }
        for (name, p) in &self.personas {
            let key = |k: &str| format!("personas.{name}.{k}");
            if p.sampling
                .temperature
                .is_some_and(|t| t.is_nan() || t < 0.0)
            {
                return Err(bad(&key("temperature"), "must be 0 or more"));
            }
            for (k, v) in [("top_p", p.sampling.top_p), ("min_p", p.sampling.min_p)] {
                if v.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
                    return Err(bad(&key(k), "must be between 0 and 1"));
                }
            }
            if p.sampling
                .repeat_penalty
                .is_some_and(|v| v.is_nan() || v < 1.0)
            {
                return Err(bad(&key("repeat_penalty"), "must be at least 1.0"));
            }
            if p.sampling.max_tokens == Some(0) {
                return Err(bad(&key("max_tokens"), "must be greater than 0"));
            }
        }
        if !(self.llm.ollama_url.starts_with("http://")
            || self.llm.ollama_url.starts_with("https://"))
        {
            return Err(bad("llm.ollama_url", "must be an http:// or https:// URL"));
        }
        for name in crate::PERSONAS {
            match self.personas.get(*name) {
                Some(p) if !p.model.trim().is_empty() => {}
                Some(_) => return Err(bad(&format!("personas.{name}.model"), "must not be empty")),
                None => return Err(bad(&format!("personas.{name}"), "is missing")),
            }
        }
        if let Some(extra) = self
            .personas
            .keys()
            .find(|k| !crate::PERSONAS.contains(&k.as_str()))
        {
            return Err(bad(
                &format!("personas.{extra}"),
                "is not a persona (ALFRED, BABS, BRICK, ROBIN)",
            ));
        }
        if self.supervision.intensity == 0 {
            return Err(bad("supervision.intensity", "must be at least 1"));
        }
        Ok(())
    }
}

/// The address of a gateway endpoint: `tcp://HOST:PORT` with an IP address or `localhost` and a port number.
/// Anything else — `ipc://`, a hostname the daemon would have to resolve, a missing port — is refused here
/// instead of failing at bind time in a restart loop.
pub fn tcp_endpoint(ep: &str) -> Result<std::net::SocketAddr, String> {
    let Some(rest) = ep.strip_prefix("tcp://") else {
        return Err(
            "must be tcp://HOST:PORT (the gateway's front door serves TCP only; ipc:// is not offered)"
                .into(),
        );
    };
    let rest = rest.replacen("localhost:", "127.0.0.1:", 1);
    rest.parse::<std::net::SocketAddr>()
        .map_err(|_| format!("`{rest}` is not IP:PORT (for example tcp://127.0.0.1:5555)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::shipped;

    #[test]
    fn a_non_loopback_bind_needs_curve_required() {
        let open = shipped().replace(
            "command_endpoint = \"tcp://127.0.0.1:5555\"",
            "command_endpoint = \"tcp://0.0.0.0:5555\"",
        );
        assert_ne!(open, shipped());
        for mode in ["off", "on"] {
            let text = open.replace("curve = \"off\"", &format!("curve = \"{mode}\""));
            let e = Settings::parse(&text, Path::new("/x/s.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("gateway.curve") && e.contains("0.0.0.0"), "{e}");
        }
        let text = open.replace("curve = \"off\"", "curve = \"required\"");
        let s = Settings::parse(&text, Path::new("/x/s.toml")).unwrap();
        assert_eq!(s.gateway.curve, crate::settings::CurveMode::Required);
    }

    #[test]
    fn the_http_door_stays_on_the_loopback_unless_told_it_is_plain_http() {
        let open = shipped().replace("bind = \"127.0.0.1:5580\"", "bind = \"0.0.0.0:5580\"");
        assert_ne!(open, shipped());
        let e = Settings::parse(&open, Path::new("/x/s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.bind") && e.contains("plain HTTP"), "{e}");
        let told = open.replace("allow_non_loopback = false", "allow_non_loopback = true");
        let s = Settings::parse(&told, Path::new("/x/s.toml")).unwrap();
        assert!(s.http.allow_non_loopback);
        let nonsense = shipped().replace("bind = \"127.0.0.1:5580\"", "bind = \"my-host\"");
        let e = Settings::parse(&nonsense, Path::new("/x/s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.bind") && e.contains("IP:PORT"), "{e}");
    }

    #[test]
    fn a_negative_epoch_bound_is_refused_and_an_older_file_has_none() {
        let text = shipped().replace("max_epochs = 2.0", "max_epochs = -1.0");
        assert_ne!(text, shipped());
        let e = Settings::parse(&text, Path::new("/x/s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("trainer.max_epochs"), "{e}");
        let older = shipped().replace("max_epochs = 2.0\n", "");
        let s = Settings::parse(&older, Path::new("/x/s.toml")).unwrap();
        assert_eq!(
            s.trainer.max_epochs, 0.0,
            "a file written before the bound trains as then"
        );
    }

    #[test]
    fn zero_heartbeat_is_refused() {
        let text = shipped().replace("heartbeat_ms = 1000", "heartbeat_ms = 0");
        let e = Settings::parse(&text, Path::new("/x/s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("gateway.heartbeat_ms"), "{e}");
    }

    #[test]
    fn endpoints_must_be_tcp_addresses() {
        assert!(tcp_endpoint("tcp://127.0.0.1:5555").is_ok());
        assert!(tcp_endpoint("tcp://localhost:5555").is_ok());
        assert!(tcp_endpoint("tcp://[::1]:5555").is_ok());
        for bad in [
            "ipc:///tmp/x",
            "tcp://127.0.0.1",
            "tcp://example.org:1",
            "udp://1.2.3.4:5",
        ] {
            assert!(tcp_endpoint(bad).is_err(), "{bad}");
        }
        let text = shipped().replace(
            "command_endpoint = \"tcp://127.0.0.1:5555\"",
            "command_endpoint = \"ipc:///tmp/batos\"",
        );
        let e = Settings::parse(&text, Path::new("/x/settings.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gateway.command_endpoint") && e.contains("tcp://"),
            "{e}"
        );
    }
}
