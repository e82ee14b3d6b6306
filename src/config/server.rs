//! `[server]`: the Beats listener and its connections, into [`ServerSettings`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::problems::Problems;
use super::raw::duration;
use crate::protocol::Limits;
use crate::server::settings::ServerSettings;

/// The Beats port Filebeat's `output.logstash` uses by default.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5044);
/// A fleet of a few thousand Filebeat agents per instance, with headroom; each costs at
/// most the README's per-connection constant (160 KiB; 12 KiB while idle) beside the
/// in-flight budget.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Logstash sends `ACK 0` after 5 s without progress; Filebeat times out after 30 s.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Twice Filebeat's 30 s timeout: long enough for a slow flush, short enough that a
/// client behind a stuck output fails over to another host.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// A client that sends nothing, and waits for nothing, for this long is gone.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Off (0): one replica keeps its clients for as long as they stay connected, as
/// Logstash does; behind a Service with several replicas set it (the chart: 10m) so that
/// load spreads onto replicas added later.
pub const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::ZERO;
/// An age shorter than this would close connections faster than Filebeat's 1 s backoff
/// lets them come back, for nothing: a connection must carry some windows to pay off.
const MIN_MAX_CONNECTION_AGE: Duration = Duration::from_secs(1);
// max_frame_bytes, max_inflated_bytes, max_window_events: `Limits::DEFAULT`, with their
// reasons, beside the decoder that enforces them.
/// Event bytes held in memory between the socket and the output, over all connections;
/// past it connections stop reading (TCP backpressure). Must hold two largest frames.
pub const DEFAULT_MAX_INFLIGHT_BYTES: u64 = 48 * 1024 * 1024;
/// At 80 % of the budget the replica is close to stopping reads for every client (TCP
/// backpressure); new connections do better on a replica with room, and the last 20 %
/// still serves the clients it has. Ready again at half of it (hysteresis).
pub const DEFAULT_READY_HIGH_WATER: f64 = 0.8;
/// A bulk flush or an Elasticsearch merge pause fills the budget for seconds; only a
/// backlog that lasts longer than that sheds new connections. Under Filebeat's 30 s
/// timeout and the kubelet's default 3 x 10 s failure threshold.
pub const DEFAULT_READY_GRACE: Duration = Duration::from_secs(15);
/// Filebeat pipelines 2 windows by default; a client with more waits for ACKs.
pub const DEFAULT_MAX_PENDING_WINDOWS: usize = 8;
/// Events per batch handed to the output: amortises queue operations per event.
pub const DEFAULT_BATCH_EVENTS: usize = 512;
/// Time given to in-flight windows to be delivered and acknowledged after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Filebeat gives up on a window after this long without an ACK (its `timeout`).
const FILEBEAT_TIMEOUT: Duration = Duration::from_secs(30);
/// Smallest `max_frame_bytes` accepted: below this, ordinary events would not fit.
const MIN_FRAME_BYTES: u64 = 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    /// Text, so that a bad address is named in the config's own words.
    listen: Option<String>,
    max_connections: usize,
    #[serde(deserialize_with = "duration")]
    keepalive_interval: Duration,
    #[serde(deserialize_with = "duration")]
    stall_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    idle_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    max_connection_age: Duration,
    /// Wider than the wire's u32, so that a value past it is named, not wrapped.
    max_frame_bytes: u64,
    max_inflated_bytes: u64,
    max_window_events: u32,
    max_inflight_bytes: u64,
    max_pending_windows: usize,
    ready_high_water: f64,
    #[serde(deserialize_with = "duration")]
    ready_grace: Duration,
    batch_events: usize,
    #[serde(deserialize_with = "duration")]
    shutdown_grace: Duration,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connection_age: DEFAULT_MAX_CONNECTION_AGE,
            max_frame_bytes: Limits::DEFAULT.max_frame_bytes.into(),
            max_inflated_bytes: Limits::DEFAULT.max_inflated_bytes,
            max_window_events: Limits::DEFAULT.max_window_events,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            max_pending_windows: DEFAULT_MAX_PENDING_WINDOWS,
            ready_high_water: DEFAULT_READY_HIGH_WATER,
            ready_grace: DEFAULT_READY_GRACE,
            batch_events: DEFAULT_BATCH_EVENTS,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

pub(super) fn validate(s: RawServer, p: &mut Problems) -> ServerSettings {
    let listen = match s.listen.as_deref().map(str::parse::<SocketAddr>) {
        None => DEFAULT_LISTEN,
        Some(Ok(addr)) => addr,
        Some(Err(_)) => {
            let text = s.listen.as_deref().unwrap_or_default();
            p.key(
                "server.listen",
                format!("`{text}` is not an address like 0.0.0.0:5044"),
            );
            DEFAULT_LISTEN
        }
    };
    p.nonzero(&[
        ("server.keepalive_interval", s.keepalive_interval),
        ("server.stall_timeout", s.stall_timeout),
        ("server.idle_timeout", s.idle_timeout),
        ("server.shutdown_grace", s.shutdown_grace),
    ]);
    if s.keepalive_interval >= FILEBEAT_TIMEOUT {
        p.key(
            "server.keepalive_interval",
            "must be under Filebeat's 30 s timeout",
        );
    }
    if !s.stall_timeout.is_zero() && s.stall_timeout <= s.keepalive_interval {
        p.key(
            "server.stall_timeout",
            "must be longer than keepalive_interval",
        );
    }
    if !s.max_connection_age.is_zero() && s.max_connection_age < MIN_MAX_CONNECTION_AGE {
        p.key(
            "server.max_connection_age",
            "must be 0 (off) or at least 1s",
        );
    }
    if !(s.ready_high_water > 0.0 && s.ready_high_water <= 1.0) {
        p.key(
            "server.ready_high_water",
            format!(
                "{} is not a fraction of the budget in (0, 1]",
                s.ready_high_water
            ),
        );
    }
    p.at_least_one(&[
        ("server.max_connections", s.max_connections as u64),
        ("server.max_pending_windows", s.max_pending_windows as u64),
        ("server.batch_events", s.batch_events as u64),
        ("server.max_window_events", s.max_window_events.into()),
    ]);
    if s.max_frame_bytes < MIN_FRAME_BYTES || s.max_frame_bytes > u64::from(u32::MAX) {
        p.key(
            "server.max_frame_bytes",
            format!(
                "{} is outside {MIN_FRAME_BYTES}..={} (the wire length is a u32)",
                s.max_frame_bytes,
                u32::MAX
            ),
        );
    }
    p.at_least_one(&[("server.max_inflated_bytes", s.max_inflated_bytes)]);
    // A large frame reserves its bytes and the record made of them before it is read
    // (connection::reader): the budget must hold both for one maximal frame.
    if s.max_inflight_bytes < 2 * s.max_frame_bytes {
        p.key(
            "server.max_inflight_bytes",
            format!(
                "{} must be at least twice max_frame_bytes ({})",
                s.max_inflight_bytes, s.max_frame_bytes
            ),
        );
    }
    // Budget permits are taken in u32 counts.
    if s.max_inflight_bytes > u64::from(u32::MAX) {
        p.key("server.max_inflight_bytes", "at most 4 GiB");
    }
    ServerSettings {
        listen,
        max_connections: s.max_connections,
        keepalive_interval: s.keepalive_interval,
        stall_timeout: s.stall_timeout,
        idle_timeout: s.idle_timeout,
        max_connection_age: Some(s.max_connection_age).filter(|a| !a.is_zero()),
        limits: Limits {
            max_frame_bytes: s.max_frame_bytes.min(u64::from(u32::MAX)) as u32,
            max_inflated_bytes: s.max_inflated_bytes,
            max_window_events: s.max_window_events,
        },
        max_inflight_bytes: s.max_inflight_bytes,
        max_pending_windows: s.max_pending_windows,
        ready_high_water: s.ready_high_water,
        ready_grace: s.ready_grace,
        batch_events: s.batch_events,
        shutdown_grace: s.shutdown_grace,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::env;
    use crate::config::Settings;

    #[test]
    fn budget_smaller_than_two_frames_is_rejected() {
        let err = Settings::load(
            None,
            env(&[
                ("LUMBERD_SERVER_MAX_INFLIGHT_BYTES", "1000"),
                ("LUMBERD_SERVER_MAX_FRAME_BYTES", "4096"),
            ]),
        )
        .unwrap_err();
        assert!(
            err.problems
                .iter()
                .any(|p| p.contains("max_inflight_bytes")),
            "{err}"
        );
    }

    #[test]
    fn max_connection_age_is_off_by_default_and_below_one_second_is_rejected() {
        let default = Settings::load(None, env(&[])).unwrap();
        assert_eq!(default.server.max_connection_age, None);
        let set =
            Settings::load(None, env(&[("LUMBERD_SERVER_MAX_CONNECTION_AGE", "10m")])).unwrap();
        assert_eq!(
            set.server.max_connection_age,
            Some(std::time::Duration::from_secs(600))
        );
        let limit = set.server.connection_age_limit().unwrap().as_secs_f64();
        assert!(
            (540.0..=660.0).contains(&limit),
            "jittered age {limit}s is outside 10m +- 10 %"
        );
        let err = Settings::load(None, env(&[("LUMBERD_SERVER_MAX_CONNECTION_AGE", "500ms")]))
            .unwrap_err();
        assert!(
            err.problems
                .iter()
                .any(|p| p.contains("max_connection_age")),
            "{err}"
        );
    }
}
