//! The Beats listener's settings (`[server]`), typed: what the accept loop and each
//! connection task read. Built and checked by `config`; knows no file format.

use std::net::SocketAddr;
use std::time::Duration;

use crate::protocol::Limits;

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Connections served at once; the accept loop refuses the next one.
    pub max_connections: usize,
    /// A keep-alive `ACK 0` this often while a window waits (docs/PROTOCOL.md rule 4).
    pub keepalive_interval: Duration,
    /// A connection whose oldest window has waited this long for the output is closed.
    pub stall_timeout: Duration,
    /// A connection that sends nothing while nothing of it waits is closed.
    pub idle_timeout: Duration,
    /// A connection older than this (each one's own age drawn within
    /// [`MAX_CONNECTION_AGE_JITTER`]) is closed at its next window boundary, so that its
    /// client reconnects through the Service and may land on another replica. `None`: off.
    pub max_connection_age: Option<Duration>,
    /// What the decoder accepts from a peer (docs/PROTOCOL.md rule 6).
    pub limits: Limits,
    /// Event bytes held in memory over all connections (the in-flight budget).
    pub max_inflight_bytes: u64,
    /// Complete windows per connection waiting for their ACK before it stops reading.
    pub max_pending_windows: usize,
    /// `/readyz` fails once in-flight bytes have stayed above this fraction of
    /// `max_inflight_bytes` for `ready_grace` (the output is behind), until they are back
    /// under half of it.
    pub ready_high_water: f64,
    pub ready_grace: Duration,
    /// Events per batch handed to the output.
    pub batch_events: usize,
    /// After a shutdown signal: the time in-flight windows get to be acknowledged.
    pub shutdown_grace: Duration,
}

/// Each connection's age limit is `max_connection_age` times a factor drawn uniformly
/// from 1 +- this: connections opened together (a replica's clients after its restart, a
/// fleet after a rollout) then do not all reconnect in the same second. 10 % spreads a
/// 10-minute age over 2 minutes, while no connection lives more than 10 % past it.
pub const MAX_CONNECTION_AGE_JITTER: f64 = 0.1;

impl ServerSettings {
    /// How long a connection accepted now may live, jittered; `None` when ages are off.
    pub fn connection_age_limit(&self) -> Option<Duration> {
        let factor = 1.0 + MAX_CONNECTION_AGE_JITTER * (2.0 * fastrand::f64() - 1.0);
        self.max_connection_age.map(|age| age.mul_f64(factor))
    }
}
