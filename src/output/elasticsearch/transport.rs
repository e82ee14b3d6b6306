//! The HTTP side of the output: one client per host (credentials, CA, timeout, gzip), a
//! request to a host by its index, the list of hosts (configured, or replaced by what
//! sniffing found), and why a request got no answer. Knows nothing of bulk items,
//! retries or templates.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use elasticsearch::http::transport::{SingleNodeConnectionPool, Transport, TransportBuilder};
use elasticsearch::http::{Method, Url};
use serde_json::Value;

use super::settings::{EsAuth, EsSettings};

/// `_bulk`, answered with each item's `status` and `error` only, and `errors`.
pub const BULK_PATH: &str = "/_bulk?filter_path=errors,items.*.status,items.*.error";

/// Why the hosts' clients could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("output.elasticsearch: {host}: {reason}")]
    Url { host: String, reason: String },
    #[error("output.ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("output.elasticsearch: {host}: {reason}")]
    Client { host: String, reason: String },
    #[error("output.elasticsearch: no hosts")]
    NoHosts,
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Neither an answer nor an error within `output.request_timeout`.
    #[error("no answer within {0:?} (output.request_timeout)")]
    Timeout(Duration),
    /// The request did not get through: refused, reset, name lookup, TLS.
    #[error("connection: {0}")]
    Connection(String),
    /// The answer broke off.
    #[error("reading answer: {0}")]
    Read(String),
}

/// An HTTP answer: its status and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

/// The hosts requests go to, each with its own client, addressed by index: those of
/// `output.elasticsearch` in their order, or with `output.sniff` the nodes the cluster
/// last named. A settlement works on one [`Nodes`] snapshot, so a new list never moves
/// the host under a request.
pub struct Hosts {
    nodes: std::sync::RwLock<Arc<Nodes>>,
    settings: EsSettings,
    ca: Option<Vec<u8>>,
    /// The host the next settlement or probe starts with: round robin.
    next: AtomicUsize,
}

/// One list of hosts and their clients.
pub struct Nodes {
    urls: Vec<String>,
    clients: Vec<Transport>,
    timeout: Duration,
}

impl Hosts {
    pub fn new(s: &EsSettings) -> Result<Hosts, TransportError> {
        if s.hosts.is_empty() {
            return Err(TransportError::NoHosts);
        }
        let ca = match &s.ca_file {
            Some(path) => {
                let ca_err = |reason: String| TransportError::CaFile {
                    path: path.display().to_string(),
                    reason,
                };
                let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
                // Checked once here; each host's client parses its own copy below.
                Certificate::from_pem(&pem).map_err(|e| ca_err(e.to_string()))?;
                Some(pem)
            }
            None => None,
        };
        let nodes = Nodes::build(&s.hosts, s, ca.as_deref(), None)?;
        Ok(Hosts {
            nodes: std::sync::RwLock::new(Arc::new(nodes)),
            settings: s.clone(),
            ca,
            next: AtomicUsize::new(0),
        })
    }

    /// The current list.
    pub fn nodes(&self) -> Arc<Nodes> {
        self.nodes.read().expect("never poisoned").clone()
    }

    /// The host of `nodes` to start with; each call moves on to the next.
    pub fn first(&self, nodes: &Nodes) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % nodes.count()
    }

    /// Replaces the list with `urls` (clients of hosts already known are kept, with
    /// their open connections); `false` when the list was already that.
    pub fn replace(&self, urls: &[String]) -> Result<bool, TransportError> {
        if urls.is_empty() {
            return Err(TransportError::NoHosts);
        }
        let current = self.nodes();
        if current.urls == urls {
            return Ok(false);
        }
        let nodes = Nodes::build(urls, &self.settings, self.ca.as_deref(), Some(&current))?;
        *self.nodes.write().expect("never poisoned") = Arc::new(nodes);
        Ok(true)
    }
}

impl Nodes {
    fn build(
        urls: &[String],
        s: &EsSettings,
        ca: Option<&[u8]>,
        reuse: Option<&Nodes>,
    ) -> Result<Nodes, TransportError> {
        let clients = urls
            .iter()
            .map(|url| {
                let known = reuse.and_then(|n| n.urls.iter().position(|u| u == url));
                match known {
                    Some(i) => Ok(reuse.expect("known in it").clients[i].clone()),
                    None => node(url, s, ca),
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Nodes {
            urls: urls.to_vec(),
            clients,
            timeout: s.request_timeout,
        })
    }

    pub fn count(&self) -> usize {
        self.clients.len()
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Posts an NDJSON body to `/_bulk` on `host`, asking for only what
    /// [`super::bulk::read_reply`] reads (as Logstash's output does): each item's answer
    /// is then `{"create":{"status":201}}` (27 bytes), not ~200 bytes of index, id,
    /// version, shards and sequence numbers: a 4096-item answer of ~110 KB, not ~800 KB,
    /// for Elasticsearch to write and gzip and for lumberd to inflate and scan.
    /// Elasticsearch (and OpenSearch) never filter an error answer
    /// (`AbstractRestChannel::newErrorBuilder`): a request refused whole keeps its reason.
    pub async fn bulk(&self, host: usize, body: Bytes) -> Result<Response, SendError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        self.send(host, Method::Post, BULK_PATH, headers, Some(body))
            .await
    }

    /// A request with an optional JSON body; its status and JSON answer (Null when the
    /// body is not JSON).
    pub async fn json(
        &self,
        host: usize,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), SendError> {
        let body = body.map(|b| Bytes::from(b.to_string()));
        let r = self
            .send(host, method, path, HeaderMap::new(), body)
            .await?;
        Ok((
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        ))
    }

    async fn send(
        &self,
        host: usize,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<Response, SendError> {
        let failed = |e: elasticsearch::Error, what: fn(String) -> SendError| {
            if e.is_timeout() {
                SendError::Timeout(self.timeout)
            } else {
                what(error_chain(&e))
            }
        };
        let r = self.clients[host]
            .send(method, path, headers, None::<&()>, body, None)
            .await
            .map_err(|e| failed(e, SendError::Connection))?;
        let status = r.status_code().as_u16();
        let body = r.bytes().await.map_err(|e| failed(e, SendError::Read))?;
        Ok(Response { status, body })
    }
}

/// One host's client.
fn node(host: &str, s: &EsSettings, ca: Option<&[u8]>) -> Result<Transport, TransportError> {
    let url = Url::parse(host).map_err(|e| TransportError::Url {
        host: host.to_string(),
        reason: e.to_string(),
    })?;
    let client_err = |reason: String| TransportError::Client {
        host: host.to_string(),
        reason,
    };
    let mut b = TransportBuilder::new(SingleNodeConnectionPool::new(url))
        .timeout(s.request_timeout)
        .request_body_compression(s.gzip)
        .enable_meta_header(false);
    b = match &s.auth {
        EsAuth::None => b,
        EsAuth::Basic { username, password } => {
            b.auth(Credentials::Basic(username.clone(), password.clone()))
        }
        EsAuth::ApiKey(key) => b.auth(Credentials::EncodedApiKey(key.clone())),
    };
    if let Some(pem) = ca {
        let cert = Certificate::from_pem(pem).map_err(|e| client_err(e.to_string()))?;
        b = b.cert_validation(CertificateValidation::Full(cert));
    }
    b.build().map_err(|e| client_err(format!("{e:?}")))
}

/// An error with its causes ("error sending request: ...: invalid peer certificate:
/// UnknownIssuer"): the top-level message alone does not say what went wrong.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}
