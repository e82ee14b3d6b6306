//! The Lumberjack wire format (v2 `W`/`J`/`C`/`A` and v1 `D` frames): bytes in,
//! frames and ACK decisions out. Knows nothing of sockets, clocks, JSON meaning or outputs.
//!
//! Rules cited as "docs/PROTOCOL.md rule N" are the numbered rules of that file; the frame
//! layouts follow go-lumber's `protocol/v2` and logstash-input-beats' `PROTOCOL.md`.

mod decoder;
mod encoder;
mod session;
mod window;

pub use decoder::AckDecoder;
pub use encoder::{encode_ack, encode_frame, encode_window, Compression};
pub use session::{Session, Step, Transcript};
pub use window::CompletedWindow;

use bytes::Bytes;

/// Version byte of Lumberjack v1 (logstash-forwarder).
pub const VERSION_1: u8 = b'1';
/// Version byte of Lumberjack v2 (Beats).
pub const VERSION_2: u8 = b'2';

pub(crate) const TYPE_WINDOW: u8 = b'W';
pub(crate) const TYPE_JSON: u8 = b'J';
pub(crate) const TYPE_COMPRESSED: u8 = b'C';
pub(crate) const TYPE_DATA: u8 = b'D';
pub(crate) const TYPE_ACK: u8 = b'A';

/// One frame sent by a client. `C` frames never appear: the decoder inflates them and
/// yields the frames inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `W`: the next `count` data frames form one window.
    Window { version: u8, count: u32 },
    /// `J` or `D`: one event.
    Data(DataFrame),
}

/// A data frame: one event, numbered `seq` by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFrame {
    pub version: u8,
    pub seq: u32,
    pub payload: Payload,
}

/// What a data frame carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// `J`: one event as a JSON document (not validated here).
    Json(Bytes),
    /// `D`: one v1 event as key/value string pairs (not validated as UTF-8 here).
    Pairs(Vec<(Bytes, Bytes)>),
}

impl Payload {
    /// Bytes of event data the payload holds.
    pub fn len(&self) -> usize {
        match self {
            Payload::Json(bytes) => bytes.len(),
            Payload::Pairs(pairs) => pairs.iter().map(|(k, v)| k.len() + v.len()).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Frames larger than this are "large": their memory is reserved against the in-flight
/// budget before their bytes are buffered, and their payload leaves the stream's buffer
/// with the allocation it was read into (the buffer goes on with a fresh one). Smaller
/// payloads read from the socket are copied out, so the connection's buffer is never
/// pinned by an event that outlives it and stays one socket read's worth. Payloads
/// inflated from a `C` frame are split off its buffer instead (no copy, no allocation
/// per event): that buffer is the frame's own, in chunks of at most 32 KiB shared by
/// events of the same window. Filebeat's events (~1 KiB) are all small.
pub const LARGE_FRAME_BYTES: usize = 16 * 1024;

/// An acknowledgement, as the server writes it and a client reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub version: u8,
    pub seq: u32,
}

/// Every size a peer controls, checked before its bytes are buffered (docs/PROTOCOL.md rule 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body of one frame on the wire or inside a `C` frame: a `J` payload, a
    /// whole `D` frame, or the compressed bytes of one `C` frame.
    pub max_frame_bytes: u32,
    /// Largest number of bytes one `C` frame may inflate to (zlib bombs).
    pub max_inflated_bytes: u64,
    /// Largest `N` a `W` frame may announce.
    pub max_window_events: u32,
}

impl Limits {
    /// The defaults of `[server]`'s `max_frame_bytes`, `max_inflated_bytes` and
    /// `max_window_events`: the one place they are written.
    pub const DEFAULT: Limits = Limits {
        // Filebeat's own `max_bytes` per event is 10 MiB; a `C` frame of a 2048-event
        // window of ~1 KiB events is ~300 KiB.
        max_frame_bytes: 16 * 1024 * 1024,
        // A window of 2048 events of 100 KiB each; anything larger is a zlib bomb.
        max_inflated_bytes: 256 * 1024 * 1024,
        // Eight times Filebeat's default `bulk_max_size` of 2048.
        max_window_events: 16_384,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// What was wrong with a byte stream. Every variant is fatal for the connection: a byte
/// stream cannot be resynchronised (docs/PROTOCOL.md rule 5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error(
        "TLS ClientHello on a plain-text port (first byte 0x16): is the client configured for TLS?"
    )]
    TlsOnPlainPort,
    #[error("HTTP request on the Beats port (first bytes {0:?}): is this an HTTP health check or a misrouted client?")]
    HttpOnBeatsPort(String),
    #[error("unsupported protocol version byte 0x{0:02x} (expected '1' or '2')")]
    UnsupportedVersion(u8),
    #[error("unknown frame type 0x{0:02x}")]
    UnknownFrameType(u8),
    #[error("{kind} frame of {len} bytes exceeds limit max_frame_bytes={limit}")]
    FrameTooLarge { kind: char, len: u64, limit: u32 },
    #[error("compressed frame inflates past limit max_inflated_bytes={limit}")]
    InflatedTooLarge { limit: u64 },
    #[error("compressed frame is not a valid zlib stream: {0}")]
    Zlib(String),
    #[error("compressed frame ends inside a frame ({0} bytes of a partial frame left)")]
    TruncatedInsideCompressed(usize),
    #[error("zlib stream ended with {0} compressed bytes of the frame left over")]
    TrailingCompressedBytes(usize),
    #[error("compressed frame inside a compressed frame")]
    NestedCompressed,
    #[error("window of {count} events exceeds limit max_window_events={limit}")]
    WindowTooLarge { count: u32, limit: u32 },
    #[error("window announces 0 events")]
    EmptyWindow,
    #[error("new window after {received} of {expected} data frames of the previous one")]
    PrematureWindow { expected: u32, received: u32 },
    #[error("data frame (seq {0}) outside any window")]
    DataOutsideWindow(u32),
    #[error("stream ended inside a frame ({0} bytes of a partial frame)")]
    Truncated(usize),
    #[error("stream ended inside a window ({received} of {expected} data frames)")]
    TruncatedWindow { expected: u32, received: u32 },
    #[error("I/O error while reading: {0}")]
    Io(String),
}

/// What kind of [`ProtocolError`] ended a stream: a fixed name for logs and metric
/// labels (bounded cardinality, whatever the peer sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    TlsOnPlainPort,
    HttpRequest,
    BadVersion,
    UnknownFrameType,
    FrameTooLarge,
    InflatedTooLarge,
    Zlib,
    TruncatedCompressed,
    TrailingCompressed,
    NestedCompressed,
    WindowTooLarge,
    EmptyWindow,
    PrematureWindow,
    DataOutsideWindow,
    Truncated,
    TruncatedWindow,
    Io,
}

impl ErrorKind {
    /// Every kind, for metrics created at 0.
    pub const ALL: [ErrorKind; 17] = [
        ErrorKind::TlsOnPlainPort,
        ErrorKind::HttpRequest,
        ErrorKind::BadVersion,
        ErrorKind::UnknownFrameType,
        ErrorKind::FrameTooLarge,
        ErrorKind::InflatedTooLarge,
        ErrorKind::Zlib,
        ErrorKind::TruncatedCompressed,
        ErrorKind::TrailingCompressed,
        ErrorKind::NestedCompressed,
        ErrorKind::WindowTooLarge,
        ErrorKind::EmptyWindow,
        ErrorKind::PrematureWindow,
        ErrorKind::DataOutsideWindow,
        ErrorKind::Truncated,
        ErrorKind::TruncatedWindow,
        ErrorKind::Io,
    ];

    /// The log line's `kind=` and the metric's label value.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::TlsOnPlainPort => "tls_on_plain_port",
            ErrorKind::HttpRequest => "http_request",
            ErrorKind::BadVersion => "bad_version",
            ErrorKind::UnknownFrameType => "unknown_frame_type",
            ErrorKind::FrameTooLarge => "frame_too_large",
            ErrorKind::InflatedTooLarge => "inflated_too_large",
            ErrorKind::Zlib => "zlib",
            ErrorKind::TruncatedCompressed => "truncated_compressed",
            ErrorKind::TrailingCompressed => "trailing_compressed",
            ErrorKind::NestedCompressed => "nested_compressed",
            ErrorKind::WindowTooLarge => "window_too_large",
            ErrorKind::EmptyWindow => "empty_window",
            ErrorKind::PrematureWindow => "premature_window",
            ErrorKind::DataOutsideWindow => "data_outside_window",
            ErrorKind::Truncated => "truncated",
            ErrorKind::TruncatedWindow => "truncated_window",
            ErrorKind::Io => "io",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

impl ProtocolError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProtocolError::TlsOnPlainPort => ErrorKind::TlsOnPlainPort,
            ProtocolError::HttpOnBeatsPort(_) => ErrorKind::HttpRequest,
            ProtocolError::UnsupportedVersion(_) => ErrorKind::BadVersion,
            ProtocolError::UnknownFrameType(_) => ErrorKind::UnknownFrameType,
            ProtocolError::FrameTooLarge { .. } => ErrorKind::FrameTooLarge,
            ProtocolError::InflatedTooLarge { .. } => ErrorKind::InflatedTooLarge,
            ProtocolError::Zlib(_) => ErrorKind::Zlib,
            ProtocolError::TruncatedInsideCompressed(_) => ErrorKind::TruncatedCompressed,
            ProtocolError::TrailingCompressedBytes(_) => ErrorKind::TrailingCompressed,
            ProtocolError::NestedCompressed => ErrorKind::NestedCompressed,
            ProtocolError::WindowTooLarge { .. } => ErrorKind::WindowTooLarge,
            ProtocolError::EmptyWindow => ErrorKind::EmptyWindow,
            ProtocolError::PrematureWindow { .. } => ErrorKind::PrematureWindow,
            ProtocolError::DataOutsideWindow(_) => ErrorKind::DataOutsideWindow,
            ProtocolError::Truncated(_) => ErrorKind::Truncated,
            ProtocolError::TruncatedWindow { .. } => ErrorKind::TruncatedWindow,
            ProtocolError::Io(_) => ErrorKind::Io,
        }
    }
}

/// A protocol error and the wire offset of the frame it was found in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error} (frame at byte offset {offset})")]
pub struct DecodeError {
    pub offset: u64,
    pub error: ProtocolError,
}

impl From<std::io::Error> for DecodeError {
    // Required by tokio-util's `Decoder`; I/O errors never come from decoding itself.
    fn from(e: std::io::Error) -> Self {
        DecodeError {
            offset: 0,
            error: ProtocolError::Io(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_own_kind_and_all_lists_each_once() {
        let every = [
            ProtocolError::TlsOnPlainPort,
            ProtocolError::HttpOnBeatsPort(String::new()),
            ProtocolError::UnsupportedVersion(0),
            ProtocolError::UnknownFrameType(0),
            ProtocolError::FrameTooLarge {
                kind: 'J',
                len: 0,
                limit: 0,
            },
            ProtocolError::InflatedTooLarge { limit: 0 },
            ProtocolError::Zlib(String::new()),
            ProtocolError::TruncatedInsideCompressed(0),
            ProtocolError::TrailingCompressedBytes(0),
            ProtocolError::NestedCompressed,
            ProtocolError::WindowTooLarge { count: 0, limit: 0 },
            ProtocolError::EmptyWindow,
            ProtocolError::PrematureWindow {
                expected: 0,
                received: 0,
            },
            ProtocolError::DataOutsideWindow(0),
            ProtocolError::Truncated(0),
            ProtocolError::TruncatedWindow {
                expected: 0,
                received: 0,
            },
            ProtocolError::Io(String::new()),
        ];
        let kinds: Vec<ErrorKind> = every.iter().map(ProtocolError::kind).collect();
        assert_eq!(kinds, ErrorKind::ALL);
        let mut labels: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), ErrorKind::ALL.len(), "labels are distinct");
    }
}
