//! Node discovery (`output.sniff`): the cluster's `GET /_nodes/http` answer becomes the
//! list of hosts requests go to, at start and every `output.sniff_interval`, as Beats'
//! and Logstash's Elasticsearch outputs offer. Knows nothing of bulk items or templates.
//!
//! Written here rather than taken from the `elasticsearch` crate's sniffing pool: that
//! pool panics in its background task on any failed or unexpected answer, keeps
//! dedicated master nodes, and picks a node per request itself, which would hide the
//! host from the settlement's failover.

use std::time::Duration;

use elasticsearch::http::Method;
use serde_json::Value;

use super::transport::{Hosts, SendError};
use crate::throttle::LogThrottle;

/// The part of the nodes-info answer discovery reads.
pub const NODES_PATH: &str = "/_nodes/http?filter_path=nodes.*.http.publish_address,nodes.*.roles";

/// Why a round of discovery changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum SniffError {
    #[error("no host answered GET /_nodes/http: {0}")]
    Unanswered(#[from] SendError),
    #[error("GET /_nodes/http answered HTTP {0}")]
    Status(u16),
    #[error("GET /_nodes/http named no node that takes requests")]
    NoNodes,
    #[error(transparent)]
    Client(#[from] super::transport::TransportError),
}

/// The URLs of the nodes in a `_nodes/http` answer, sorted, with `scheme` (the one the
/// configured hosts use: the answer does not say): every node with an HTTP address
/// except dedicated masters, which should not coordinate bulk requests.
pub fn node_urls(answer: &Value, scheme: &str) -> Vec<String> {
    let Some(nodes) = answer["nodes"].as_object() else {
        return Vec::new();
    };
    let mut urls: Vec<String> = nodes
        .values()
        .filter(|n| !dedicated_master(&n["roles"]))
        .filter_map(|n| n["http"]["publish_address"].as_str())
        .filter_map(|a| url_of(a, scheme))
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

/// A master-eligible node that holds no data and runs no ingest: it should be left to
/// run the cluster (Elastic's clients skip these too). A node without roles
/// (coordinating only) takes requests.
fn dedicated_master(roles: &Value) -> bool {
    let Some(roles) = roles.as_array() else {
        return false;
    };
    let has = |f: &dyn Fn(&str) -> bool| roles.iter().filter_map(Value::as_str).any(f);
    has(&|r| r == "master") && !has(&|r| r.starts_with("data") || r == "ingest")
}

/// `publish_address` as Elasticsearch writes it: `IP:PORT`, `[IPv6]:PORT`, or
/// `HOSTNAME/IP:PORT` (then the name, which a certificate can carry).
fn url_of(address: &str, scheme: &str) -> Option<String> {
    let (host, port) = match address.split_once('/') {
        Some((name, ip_port)) if !name.is_empty() => (name, ip_port.rsplit_once(':')?.1),
        Some((_, ip_port)) => ip_port.rsplit_once(':')?,
        None => address.rsplit_once(':')?,
    };
    let port: u16 = port.parse().ok()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}:{port}"))
}

/// One round: asks the current hosts in turn until one answers, then replaces the list
/// with the nodes named; `Ok(Some(urls))` when the list changed.
pub async fn sniff(hosts: &Hosts) -> Result<Option<Vec<String>>, SniffError> {
    let nodes = hosts.nodes();
    let scheme = nodes
        .urls()
        .first()
        .and_then(|u| u.split_once("://"))
        .map_or("http", |(s, _)| s)
        .to_string();
    let first = hosts.first(&nodes);
    let mut last = None;
    for i in 0..nodes.count() {
        match nodes
            .json((first + i) % nodes.count(), Method::Get, NODES_PATH, None)
            .await
        {
            Ok((200, answer)) => {
                let urls = node_urls(&answer, &scheme);
                if urls.is_empty() {
                    return Err(SniffError::NoNodes);
                }
                return Ok(hosts.replace(&urls)?.then_some(urls));
            }
            Ok((status, _)) => return Err(SniffError::Status(status)),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| SendError::Connection("no hosts".into()))
        .into())
}

/// Rounds every `interval` until the task is aborted; a failed round keeps the list.
pub async fn run(
    hosts: std::sync::Arc<Hosts>,
    interval: Duration,
    log: std::sync::Arc<LogThrottle>,
) {
    loop {
        match sniff(&hosts).await {
            Ok(Some(urls)) => tracing::info!(hosts = ?urls, "Elasticsearch nodes discovered"),
            Ok(None) => {}
            Err(e) => {
                if let Some(suppressed) = log.allow(("elasticsearch", "sniff")) {
                    tracing::warn!(error = %e, suppressed,
                        "node discovery failed; keeping the hosts known so far");
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_node_with_an_http_address_except_dedicated_masters_takes_requests() {
        let answer = json!({"nodes": {
            "a": {"roles": ["data", "ingest", "master"], "http": {"publish_address": "127.0.0.1:9201"}},
            "b": {"roles": ["master"], "http": {"publish_address": "127.0.0.1:9202"}},
            "c": {"roles": [], "http": {"publish_address": "127.0.0.1:9203"}},
            "d": {"roles": ["data_hot", "master"], "http": {"publish_address": "es-d.svc/10.0.0.4:9200"}},
            "e": {"roles": ["master", "ingest"], "http": {"publish_address": "[::1]:9205"}},
            "f": {"roles": ["data"]},
        }});
        assert_eq!(
            node_urls(&answer, "https"),
            [
                "https://127.0.0.1:9201",
                "https://127.0.0.1:9203",
                "https://[::1]:9205",
                "https://es-d.svc:9200",
            ]
        );
    }

    #[test]
    fn an_address_without_a_name_uses_the_ip_and_junk_is_skipped() {
        let answer = json!({"nodes": {
            "a": {"http": {"publish_address": "/10.0.0.1:9200"}},
            "b": {"http": {"publish_address": "no-port"}},
            "c": {"http": {"publish_address": "host:notaport"}},
        }});
        assert_eq!(node_urls(&answer, "http"), ["http://10.0.0.1:9200"]);
        assert!(node_urls(&json!({"error": "x"}), "http").is_empty());
    }
}
