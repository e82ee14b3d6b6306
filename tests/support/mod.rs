//! Harness for tests that run the real `lumberd` binary against real peers:
//!
//! * [`lumberd`]: starts `lumberd serve` on 127.0.0.1:0 ([`lumberd::Lumberd`]), its
//!   environment, logs, admin port and signals;
//! * [`clients`]: the real Beats clients (go-lumber, pylogbeat, lumberjack-client), run
//!   with a deadline, their reports parsed;
//! * [`stored`]: lumberd's file output read back, and the exactly-once check against
//!   what the clients sent; [`es`]: a real Elasticsearch node and its queries;
//! * [`certs`]: fresh certificates for the TLS tests;
//! * [`filebeat`]: Elastic's Filebeat run against lumberd, and its registry;
//!   [`qwen_log`]: the Qwen log files it ships, and the check of what lumberd stored;
//! * [`service`]: a round-robin relay standing in for a Kubernetes Service;
//! * [`tmpfs`]: a size-limited filesystem mounted by the test, to fill up.
#![allow(dead_code)]

pub mod certs;
pub mod clients;
pub mod es;
pub mod filebeat;
pub mod lumberd;
pub mod qwen_log;
pub mod service;
pub mod stored;
pub mod tmpfs;

use std::path::PathBuf;

/// The spool's segment files (`*.seg`) in `dir`, oldest first.
pub fn spool_segments(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments
}

/// Repository root (where tests/clients/setup.sh puts target/clients/).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `s` cut to at most `max` bytes (on a char boundary), saying how long it was: failure
/// messages quote logs and client output without drowning the diagnosis.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &s[..end], s.len())
}
