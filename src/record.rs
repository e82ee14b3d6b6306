//! Events as the output receives them: a document for an index, or a dead letter.
//! Pure data; knows nothing of the wire protocol, sockets or outputs.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};

/// What a record is, so an output can route dead letters to its own destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Event,
    DeadLetter,
}

/// One document for the output: a compact JSON object (no raw newline) for `index`,
/// with the id that makes a resent event a duplicate instead of a second document.
#[derive(Debug, Clone)]
pub struct Record {
    pub kind: RecordKind,
    pub index: Arc<str>,
    pub id: Option<DocId>,
    pub doc: Bytes,
}

impl Record {
    /// Bytes this record holds in memory, for the in-flight budget.
    pub fn size(&self) -> usize {
        self.doc.len() + self.index.len()
    }
}

/// A document id: a 128-bit digest as 32 lowercase hex digits (`_id` in Elasticsearch).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DocId([u8; 32]);

impl DocId {
    pub fn from_digest(digest: u128) -> DocId {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 32];
        for (i, b) in digest.to_be_bytes().iter().enumerate() {
            hex[2 * i] = DIGITS[(b >> 4) as usize];
            hex[2 * i + 1] = DIGITS[(b & 15) as usize];
        }
        DocId(hex)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits")
    }
}

impl std::fmt::Debug for DocId {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for DocId {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where and when an event was received, for routing, ids and dead letters.
#[derive(Debug, Clone)]
pub struct Origin {
    pub peer: SocketAddr,
    pub received: DateTime<Utc>,
    /// The verified TLS session of the connection; `None` on a plain connection.
    pub tls: Option<Arc<TlsPeer>>,
}

impl Origin {
    /// A plain (non-TLS) connection's origin.
    pub fn plain(peer: SocketAddr, received: DateTime<Utc>) -> Origin {
        Origin {
            peer,
            received,
            tls: None,
        }
    }

    /// The origin of an event on a connection; `tls` is `None` on a plain connection and
    /// the handshake's verified peer on a TLS one.
    pub fn new(peer: SocketAddr, received: DateTime<Utc>, tls: Option<Arc<TlsPeer>>) -> Origin {
        Origin {
            peer,
            received,
            tls,
        }
    }
}

/// What the TLS handshake established about a client, for the pipeline's metadata
/// (Logstash's `[@metadata][tls_peer]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsPeer {
    /// The client certificate's subject (RFC 4514 form), when the client sent one.
    pub subject: Option<String>,
    /// The client certificate's subject alternative names (DNS names, IPs, URIs, emails).
    pub sans: Vec<String>,
    /// "TLSv1.2" or "TLSv1.3".
    pub protocol: String,
    /// The negotiated cipher suite, IANA name.
    pub cipher: String,
}

/// Why a payload in an intact frame could not become an event (docs/PROTOCOL.md rule 5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is not a JSON object: {0}")]
    NotJsonObject(String),
    #[error("payload is not UTF-8")]
    NotUtf8,
}

impl PayloadError {
    /// A fixed name for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            PayloadError::NotJsonObject(_) => "not_json_object",
            PayloadError::NotUtf8 => "not_utf8",
        }
    }
}

/// The dead-letter document: the raw payload (as a string when it is UTF-8, as hex
/// otherwise), the reason and the peer, so nothing a client sent is silently lost.
pub fn dead_letter_doc(raw: &[u8], reason: &PayloadError, origin: &Origin) -> Bytes {
    let mut doc = serde_json::Map::new();
    doc.insert(
        "@timestamp".into(),
        origin
            .received
            .to_rfc3339_opts(SecondsFormat::Millis, true)
            .into(),
    );
    doc.insert("reason".into(), reason.to_string().into());
    doc.insert("error_kind".into(), reason.kind().into());
    doc.insert("peer".into(), origin.peer.to_string().into());
    match std::str::from_utf8(raw) {
        Ok(text) => doc.insert("payload".into(), text.into()),
        Err(_) => doc.insert("payload_hex".into(), hex(raw).into()),
    };
    Bytes::from(serde_json::to_vec(&doc).expect("a map of strings serialises"))
}

fn hex(raw: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(raw.len() * 2);
    for b in raw {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}
