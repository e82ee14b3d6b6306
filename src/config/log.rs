//! `[log]`: lumberd's own log lines, into [`LogSettings`]. Its consumers are `main`
//! (level and format, when it sets up tracing) and `lib` (the repeat interval, handed to
//! the throttle as a plain `Duration`), so the type stays here.

use std::time::Duration;

use serde::Deserialize;

use super::problems::Problems;
use super::raw::duration;

/// Every warning plus lumberd's lifecycle lines (listening, output up or down, shutdown);
/// `debug` adds per-connection detail that a fleet of clients makes noisy.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// `auto`: human-readable on a terminal, JSON otherwise (containers).
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Auto;
/// The same warning (a bad client, a failing output) is logged at most once per this
/// interval; the next line carries how many were suppressed in between.
pub const DEFAULT_LOG_REPEAT_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    /// A level or a tracing filter, checked to parse.
    pub level: String,
    pub format: LogFormat,
    pub repeat_interval: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    level: String,
    format: Option<String>,
    #[serde(deserialize_with = "duration")]
    repeat_interval: Duration,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: DEFAULT_LOG_LEVEL.into(),
            format: None,
            repeat_interval: DEFAULT_LOG_REPEAT_INTERVAL,
        }
    }
}

pub(super) fn validate(l: RawLog, p: &mut Problems) -> LogSettings {
    p.nonzero(&[("log.repeat_interval", l.repeat_interval)]);
    let format = match l.format.as_deref() {
        None => DEFAULT_LOG_FORMAT,
        Some("auto") => LogFormat::Auto,
        Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            p.key(
                "log.format",
                format!("`{other}` is not one of auto, text, json"),
            );
            DEFAULT_LOG_FORMAT
        }
    };
    if tracing_subscriber::EnvFilter::try_new(&l.level).is_err() {
        p.key(
            "log.level",
            format!("`{}` is not a level or filter like \"info\"", l.level),
        );
    }
    LogSettings {
        level: l.level,
        format,
        repeat_interval: l.repeat_interval,
    }
}
