//! Events as the output receives them: a document for an index, or a dead letter.
//! Pure data; knows nothing of the wire protocol, sockets or outputs.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// What a record is, for metrics and tests; the destination says where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Event,
    DeadLetter,
}

/// One document for the output: a compact JSON object (no raw newline) for `dest`, with
/// the id that makes a resent event a duplicate instead of a second document.
#[derive(Debug, Clone)]
pub struct Record {
    pub dest: Destination,
    pub id: Option<DocId>,
    pub doc: Bytes,
}

impl Record {
    /// Bytes this record holds in memory, for the in-flight budget.
    pub fn size(&self) -> usize {
        let dest = match &self.dest {
            Destination::Index(name) => name.len(),
            Destination::DeadLetter(_) => std::mem::size_of::<DeadLetter>(),
        };
        self.doc.len() + dest
    }

    pub fn kind(&self) -> RecordKind {
        match self.dest {
            Destination::Index(_) => RecordKind::Event,
            Destination::DeadLetter(_) => RecordKind::DeadLetter,
        }
    }

    /// The event index, `None` for a dead letter (whose index each output names from
    /// its day with `output.dead_letter_prefix`).
    pub fn index(&self) -> Option<&IndexName> {
        match &self.dest {
            Destination::Index(name) => Some(name),
            Destination::DeadLetter(_) => None,
        }
    }
}

/// Where a record goes: a validated event index, or the dead letters of a day. Typed, so
/// no output re-parses a name to learn what the pipeline meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Index(IndexName),
    DeadLetter(DeadLetter),
}

/// A dead letter's reason and the day whose dead-letter index holds it (the UTC day it
/// was received: a payload that is not an event has no time of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetter {
    pub reason: DeadLetterReason,
    pub day: NaiveDate,
}

/// Why the pipeline made an event a dead letter (the document says it in full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    NotJsonObject,
    NotUtf8,
    /// `pipeline.index` rendered a name Elasticsearch would refuse.
    InvalidIndex,
}

impl DeadLetterReason {
    /// A fixed name for metric labels and the document's `error_kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::NotJsonObject => "not_json_object",
            DeadLetterReason::NotUtf8 => "not_utf8",
            DeadLetterReason::InvalidIndex => "invalid_index",
        }
    }
}

/// Elasticsearch's longest index name, in UTF-8 bytes (`MetadataCreateIndexService.
/// MAX_INDEX_NAME_BYTES` in 8.11.3).
pub const MAX_INDEX_NAME_BYTES: usize = 255;

/// An index name checked against Elasticsearch 8.11.3's rules (`MetadataCreateIndexService
/// .validateIndexOrAliasName` and `validateIndexName`), so no output ever sees a name
/// Elasticsearch would refuse, and the file output can build a file name from it inside
/// its directory: no `/`, not `.` or `..`, no NUL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexName(Arc<str>);

/// Why a name is not a valid index name; the words are Elasticsearch's where it has them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIndexName {
    #[error("must not be empty")]
    Empty,
    #[error("must be lowercase")]
    Uppercase,
    /// `Strings.INVALID_FILENAME_CHARS` (`\ / * ? " < > |`, space, `,`), `#` and `:`.
    #[error("must not contain {0:?}")]
    Forbidden(char),
    /// Not refused by Elasticsearch, refused here: a newline or NUL in a name breaks log
    /// lines and file names, and no real index has one.
    #[error("must not contain the control character {0:?}")]
    Control(char),
    #[error("must not start with {0:?}")]
    Start(char),
    #[error("must not be '.' or '..'")]
    Dots,
    #[error("is too long ({bytes} > {max} bytes)")]
    TooLong { bytes: usize, max: usize },
}

/// Characters Elasticsearch refuses anywhere in an index name.
const FORBIDDEN_INDEX_CHARS: &[char] =
    &['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':'];

impl IndexName {
    /// `name` if Elasticsearch accepts it as an index name of at most `max_bytes`.
    pub fn new(name: &str, max_bytes: usize) -> Result<IndexName, InvalidIndexName> {
        Self::check(name, max_bytes)?;
        Ok(IndexName(name.into()))
    }

    /// The rules, in Elasticsearch's order. A leading `.` is refused as well: 8.11.3
    /// accepts it with a deprecation warning, but dot names are its hidden and system
    /// indices (`.security`, `.kibana_*`), which no event routing may reach.
    pub fn check(name: &str, max_bytes: usize) -> Result<(), InvalidIndexName> {
        if let Some(c) = name.chars().find(|c| FORBIDDEN_INDEX_CHARS.contains(c)) {
            return Err(InvalidIndexName::Forbidden(c));
        }
        if let Some(c) = name.chars().find(|c| c.is_control()) {
            return Err(InvalidIndexName::Control(c));
        }
        let first = name.chars().next().ok_or(InvalidIndexName::Empty)?;
        if name == "." || name == ".." {
            return Err(InvalidIndexName::Dots);
        }
        if matches!(first, '_' | '-' | '+' | '.') {
            return Err(InvalidIndexName::Start(first));
        }
        if name.len() > max_bytes {
            return Err(InvalidIndexName::TooLong {
                bytes: name.len(),
                max: max_bytes,
            });
        }
        // Java's `toLowerCase(Locale.ROOT).equals(name)`: no character changes.
        if name
            .chars()
            .any(|c| c.to_lowercase().ne(std::iter::once(c)))
        {
            return Err(InvalidIndexName::Uppercase);
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a shared string (no copy).
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }

    /// The same name: the same shared string (cheap, the usual case), or equal text.
    pub fn same(&self, other: &IndexName) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl std::ops::Deref for IndexName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IndexName {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
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

    /// The id [`DocId::as_str`] wrote, back from its 32 lowercase hex digits; `None` for
    /// anything else.
    pub fn from_hex(hex: &[u8]) -> Option<DocId> {
        let hex: [u8; 32] = hex.try_into().ok()?;
        hex.iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            .then_some(DocId(hex))
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
    pub fn reason(&self) -> DeadLetterReason {
        match self {
            PayloadError::NotJsonObject(_) => DeadLetterReason::NotJsonObject,
            PayloadError::NotUtf8 => DeadLetterReason::NotUtf8,
        }
    }

    /// A fixed name for metric labels.
    pub fn kind(&self) -> &'static str {
        self.reason().as_str()
    }
}

/// The dead-letter document: the raw payload (as a string when it is UTF-8, as hex
/// otherwise), the reason and the peer, so nothing a client sent is silently lost.
pub fn dead_letter_doc(raw: &[u8], reason: &PayloadError, origin: &Origin) -> Bytes {
    let mut doc = dead_letter_head(origin, &reason.to_string(), reason.reason());
    match std::str::from_utf8(raw) {
        Ok(text) => doc.insert("payload".into(), text.into()),
        Err(_) => doc.insert("payload_hex".into(), hex(raw).into()),
    };
    Bytes::from(serde_json::to_vec(&doc).expect("a map of strings serialises"))
}

/// The dead letter of an event whose `pipeline.index` gave a name Elasticsearch would
/// refuse: the event as it would have been stored, the name and why it is invalid.
pub fn invalid_index_doc(
    event: &[u8],
    name: &str,
    why: &InvalidIndexName,
    origin: &Origin,
) -> Bytes {
    let reason = format!("index name {name:?} {why}");
    let mut doc = dead_letter_head(origin, &reason, DeadLetterReason::InvalidIndex);
    doc.insert("original_index".into(), name.into());
    doc.insert(
        "event".into(),
        serde_json::json!({ "original": String::from_utf8_lossy(event) }),
    );
    Bytes::from(serde_json::to_vec(&doc).expect("a map of strings serialises"))
}

fn dead_letter_head(
    origin: &Origin,
    reason: &str,
    kind: DeadLetterReason,
) -> serde_json::Map<String, serde_json::Value> {
    let mut doc = serde_json::Map::new();
    doc.insert(
        "@timestamp".into(),
        origin
            .received
            .to_rfc3339_opts(SecondsFormat::Millis, true)
            .into(),
    );
    doc.insert("reason".into(), reason.into());
    doc.insert("error_kind".into(), kind.as_str().into());
    doc.insert("peer".into(), origin.peer.to_string().into());
    doc
}

/// The id of a dead letter with no origin to name it: a digest of the bytes the client
/// sent, so the same payload resent is a duplicate (409), not a second dead letter.
pub fn id_of_bytes(raw: &[u8]) -> DocId {
    DocId::from_digest(twox_hash::XxHash3_128::oneshot(raw))
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
