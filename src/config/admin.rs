//! `[admin]`: the HTTP port of /metrics, /healthz and /readyz, into [`AdminSettings`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::problems::Problems;
use super::raw::duration;
use crate::admin::AdminSettings;

/// Prometheus metrics, /healthz and /readyz: Logstash's monitoring API port.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9600);
/// Scrapers and probes served at once; a handful is the normal load.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 16;
/// A scraper or prober that has not sent its request headers by then is disconnected.
pub const DEFAULT_ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    /// Text: `""` turns the port off, and a bad address is named as written.
    listen: Option<String>,
    max_connections: usize,
    #[serde(deserialize_with = "duration")]
    header_timeout: Duration,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: None,
            max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
            header_timeout: DEFAULT_ADMIN_HEADER_TIMEOUT,
        }
    }
}

pub(super) fn validate(a: RawAdmin, p: &mut Problems) -> AdminSettings {
    let listen = match a.listen.as_deref() {
        None => Some(DEFAULT_ADMIN_LISTEN),
        Some("") => None,
        Some(text) => match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                p.key(
                    "admin.listen",
                    format!("`{text}` is not an address like 0.0.0.0:9600 (or \"\" for none)"),
                );
                None
            }
        },
    };
    p.nonzero(&[("admin.header_timeout", a.header_timeout)]);
    p.at_least_one(&[("admin.max_connections", a.max_connections as u64)]);
    AdminSettings {
        listen,
        max_connections: a.max_connections,
        header_timeout: a.header_timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::env;
    use crate::config::Settings;

    #[test]
    fn admin_port_defaults_to_9600_an_empty_listen_turns_it_off_and_a_bad_one_is_named() {
        let d = Settings::load(None, env(&[])).unwrap();
        assert_eq!(d.admin.listen, Some("0.0.0.0:9600".parse().unwrap()));
        assert_eq!(d.log.repeat_interval, Duration::from_secs(10));
        let off = Settings::load(None, env(&[("LUMBERD_ADMIN_LISTEN", "")])).unwrap();
        assert_eq!(off.admin.listen, None);
        let bad = Settings::load(
            None,
            env(&[
                ("LUMBERD_ADMIN_LISTEN", "port 9600"),
                ("LUMBERD_LOG_REPEAT_INTERVAL", "often"),
            ]),
        )
        .unwrap_err();
        assert!(
            bad.problems.iter().any(|p| p.starts_with("admin.listen:"))
                && bad
                    .problems
                    .iter()
                    .any(|p| p.starts_with("log.repeat_interval")),
            "{:?}",
            bad.problems
        );
    }
}
