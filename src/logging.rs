//! Structured logs: JSON lines by default, human-readable with `--log-format pretty`; the level comes from
//! `RUST_LOG` when set, else from settings (and can be changed live).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use batos_actors::settings::LogFormat;

/// Changes the active log filter (settings hot reload).
#[derive(Clone)]
pub struct LogHandle {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    from_env: bool,
}

impl LogHandle {
    /// Applies a new level directive unless `RUST_LOG` pins it. Returns whether it changed anything.
    pub fn set_level(&self, level: &str) -> Result<bool, String> {
        if self.from_env {
            return Ok(false);
        }
        let Some(h) = &self.handle else {
            return Ok(false);
        };
        let filter =
            EnvFilter::try_new(level).map_err(|e| format!("invalid log level `{level}`: {e}"))?;
        h.reload(filter).map_err(|e| e.to_string())?;
        Ok(true)
    }
}

/// Installs the global subscriber (to stderr).
pub fn init(format: LogFormat, level: &str) -> LogHandle {
    let from_env = std::env::var("RUST_LOG")
        .map(|v| !v.is_empty())
        .unwrap_or(false);
    let filter = if from_env {
        EnvFilter::from_default_env()
    } else {
        EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .pretty()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    LogHandle {
        handle: result.is_ok().then_some(handle),
        from_env,
    }
}
