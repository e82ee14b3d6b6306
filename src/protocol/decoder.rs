//! Frame decoding: a length is checked before its bytes are buffered, and `C` frames are
//! inflated as their bytes arrive, so memory per connection stays bounded by the limits.

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};

use super::{
    Ack, DataFrame, DecodeError, Frame, Limits, Payload, ProtocolError, LARGE_FRAME_BYTES,
    TYPE_ACK, TYPE_COMPRESSED, TYPE_DATA, TYPE_JSON, TYPE_WINDOW, VERSION_1, VERSION_2,
};

/// Inflated bytes produced per step: the decoder's scratch memory for a `C` frame is one
/// chunk plus at most one partial inner frame.
const INFLATE_CHUNK: usize = 32 * 1024;
/// Least output room per inflate step: one page, so a trickle of input still makes steps
/// worth their call.
const MIN_INFLATE_ROOM: usize = 4096;
/// Output room per input byte: log text inflates ~4-10x, so 16x rarely needs two steps.
const INFLATE_ROOM_PER_BYTE: usize = 16;

/// Request methods recognised at the start of a stream (docs/PROTOCOL.md rule 7).
const HTTP_METHODS: [&[u8; 4]; 8] = [
    b"GET ", b"POST", b"PUT ", b"HEAD", b"OPTI", b"DELE", b"PATC", b"CONN",
];

/// Server-side decoder: client frames, with `C` frames inflated into the frames they
/// carry. It keeps no window state; [`super::Session`] drives it with the window tracker.
#[derive(Debug)]
pub(super) struct Codec {
    limits: Limits,
    /// Wire bytes consumed so far: the offset reported with errors.
    consumed: u64,
    inflating: Option<Inflating>,
    /// `C` frames started so far.
    compressed_frames: u64,
    /// Bytes inflated so far, over every `C` frame.
    inflated_total: u64,
}

struct Inflating {
    /// Wire offset of the `C` frame's header.
    frame_offset: u64,
    /// Compressed bytes of this frame not yet fed to zlib.
    remaining: usize,
    zlib: Decompress,
    /// Inflated bytes not yet split into frames.
    out: BytesMut,
    inflated: u64,
    ended: bool,
    /// An inflate error, raised once the frames inflated before it are decoded.
    error: Option<ProtocolError>,
}

impl std::fmt::Debug for Inflating {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflating")
            .field("frame_offset", &self.frame_offset)
            .field("remaining", &self.remaining)
            .field("inflated", &self.inflated)
            .finish()
    }
}

enum Parsed {
    Frame(Frame),
    /// A `C` header was consumed; this many compressed bytes follow.
    Compressed(usize),
}

impl Codec {
    pub(super) fn new(limits: Limits) -> Self {
        Codec {
            limits,
            consumed: 0,
            inflating: None,
            compressed_frames: 0,
            inflated_total: 0,
        }
    }

    /// Wire bytes consumed so far.
    pub(super) fn offset(&self) -> u64 {
        self.consumed
    }

    /// `C` frames met so far (their inner frames come out as frames of their own).
    pub(super) fn compressed_frames(&self) -> u64 {
        self.compressed_frames
    }

    /// Bytes inflated so far, over every `C` frame.
    pub(super) fn inflated_bytes(&self) -> u64 {
        self.inflated_total
    }

    /// Bytes the codec must hold in one piece to finish the frame it is in, when that
    /// frame's header is already known to announce more than is buffered (a `J`
    /// payload); 0 otherwise. A `D` frame's size is known only once every length prefix
    /// is buffered: past [`LARGE_FRAME_BYTES`] it may need up to `max_frame_bytes`. Lets
    /// the caller reserve memory before reading those bytes.
    pub(super) fn buffer_demand(&self, src: &BytesMut) -> usize {
        let buf = match &self.inflating {
            Some(inf) => &inf.out,
            None => src,
        };
        if buf.len() < 10 {
            return 0;
        }
        let total = match buf[1] {
            TYPE_JSON => 10 + be32(&buf[6..10]) as usize,
            TYPE_DATA if buf.len() > LARGE_FRAME_BYTES => 10 + self.limits.max_frame_bytes as usize,
            TYPE_DATA => data_frame_known_len(buf),
            _ => return 0,
        };
        if total > buf.len() {
            total
        } else {
            0
        }
    }

    /// Makes room in one piece for the frame [`Codec::buffer_demand`] reported, once the
    /// caller has reserved the memory for it.
    pub(super) fn make_room(&mut self, src: &mut BytesMut) {
        let demand = self.buffer_demand(src);
        let buf = match &mut self.inflating {
            Some(inf) => &mut inf.out,
            None => src,
        };
        buf.reserve(demand.saturating_sub(buf.len()));
    }

    /// The next frame from the front of `src`; `Ok(None)` when more bytes are needed.
    pub(super) fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        loop {
            if let Some(inf) = self.inflating.as_mut() {
                let at = inf.frame_offset;
                let fail = |error| DecodeError { offset: at, error };
                if let Some(parsed) =
                    parse(&mut inf.out, &self.limits, true, false).map_err(fail)?
                {
                    match parsed {
                        Parsed::Frame(frame) => return Ok(Some(frame)),
                        // parse() refuses a C inside a C (docs/PROTOCOL.md rule 1).
                        Parsed::Compressed(_) => unreachable!("nested C is rejected by parse"),
                    }
                }
                // Frames inflated before a zlib error or the limit are yielded first, so
                // how TCP split the stream never changes what is decoded before an error.
                if let Some(error) = inf.error.take() {
                    return Err(fail(error));
                }
                if inf.ended {
                    if !inf.out.is_empty() {
                        return Err(fail(ProtocolError::TruncatedInsideCompressed(
                            inf.out.len(),
                        )));
                    }
                    if inf.remaining > 0 {
                        return Err(fail(ProtocolError::TrailingCompressedBytes(inf.remaining)));
                    }
                    self.inflating = None;
                    continue;
                }
                let limit = self.limits.max_inflated_bytes;
                let take = src.len().min(inf.remaining);
                // Output room in proportion to the input (text inflates ~4-10x), so small
                // reads do not zero-fill a whole chunk; one byte past the limit at most, so
                // the limit is exact whatever the chunking.
                let room = (take
                    .saturating_mul(INFLATE_ROOM_PER_BYTE)
                    .clamp(MIN_INFLATE_ROOM, INFLATE_CHUNK) as u64)
                    .min(limit - inf.inflated + 1) as usize;
                let (in_before, out_before) = (inf.zlib.total_in(), inf.zlib.total_out());
                let len = inf.out.len();
                let status = if inf.out.capacity() - len < room && len <= LARGE_FRAME_BYTES {
                    // The usual step: the buffer is full (its frames are split off and
                    // shared by their events), so the partial frame moves to a fresh one
                    // sized for this step, and zlib writes into its spare capacity: no
                    // zero-fill of the room first, no growth copy later.
                    let mut next = Vec::with_capacity(len + room);
                    next.extend_from_slice(&inf.out);
                    let status =
                        inf.zlib
                            .decompress_vec(&src[..take], &mut next, FlushDecompress::None);
                    // Through `Bytes`: both conversions keep the allocation (it is
                    // unique), and the spare capacity comes back with it.
                    inf.out = BytesMut::from(Bytes::from(next));
                    status
                } else {
                    // Room is there (a large frame's reserved buffer, or what a short
                    // step left), or a large frame grows in place.
                    inf.out.resize(len + room, 0);
                    inf.zlib
                        .decompress(&src[..take], &mut inf.out[len..], FlushDecompress::None)
                };
                let consumed = (inf.zlib.total_in() - in_before) as usize;
                let produced = (inf.zlib.total_out() - out_before) as usize;
                inf.out.truncate(len + produced);
                src.advance(consumed);
                self.consumed += consumed as u64;
                inf.remaining -= consumed;
                inf.inflated += produced as u64;
                self.inflated_total += produced as u64;
                match status {
                    Ok(Status::StreamEnd) => inf.ended = true,
                    Ok(_) => {}
                    Err(e) => inf.error = Some(ProtocolError::Zlib(e.to_string())),
                }
                // Checked while inflating (docs/PROTOCOL.md rule 6): the byte past the limit
                // is discarded, and the frames within it still come out first.
                if inf.inflated > limit {
                    inf.out
                        .truncate(inf.out.len() - (inf.inflated - limit) as usize);
                    inf.error = Some(ProtocolError::InflatedTooLarge { limit });
                    inf.ended = false;
                }
                if consumed == 0 && produced == 0 && !inf.ended && inf.error.is_none() {
                    if inf.remaining == 0 {
                        inf.error = Some(ProtocolError::Zlib(
                            "stream ends before its end marker".into(),
                        ));
                    } else if take == 0 {
                        return Ok(None);
                    } else {
                        inf.error = Some(ProtocolError::Zlib("inflate made no progress".into()));
                    }
                }
                continue;
            }

            let at = self.consumed;
            let before = src.len();
            let parsed = parse(src, &self.limits, false, at == 0)
                .map_err(|error| DecodeError { offset: at, error })?;
            self.consumed += (before - src.len()) as u64;
            match parsed {
                None => return Ok(None),
                Some(Parsed::Frame(frame)) => return Ok(Some(frame)),
                Some(Parsed::Compressed(len)) => {
                    self.compressed_frames += 1;
                    self.inflating = Some(Inflating {
                        frame_offset: at,
                        remaining: len,
                        zlib: Decompress::new(true),
                        out: BytesMut::new(),
                        inflated: 0,
                        ended: false,
                        error: None,
                    });
                }
            }
        }
    }

    /// As [`Codec::decode`], once no more bytes will come: a partial frame left over is
    /// an error.
    pub(super) fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        let partial = src.len() + self.inflating.as_ref().map_or(0, |i| i.out.len().max(1));
        if partial > 0 {
            let offset = self
                .inflating
                .as_ref()
                .map_or(self.consumed, |i| i.frame_offset);
            return Err(DecodeError {
                offset,
                error: ProtocolError::Truncated(partial),
            });
        }
        Ok(None)
    }
}

/// Parses one frame from the front of `buf`, consuming it; `Ok(None)` when more bytes are
/// needed (habit: "need more bytes" is not an error).
fn parse(
    buf: &mut BytesMut,
    limits: &Limits,
    inside_compressed: bool,
    stream_start: bool,
) -> Result<Option<Parsed>, ProtocolError> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    if version != VERSION_1 && version != VERSION_2 {
        if stream_start {
            if version == 0x16 {
                return Err(ProtocolError::TlsOnPlainPort);
            }
            if b"GPHODC".contains(&version) {
                if buf.len() < 4 {
                    return Ok(None);
                }
                if HTTP_METHODS.iter().any(|m| buf.starts_with(&m[..])) {
                    let shown = &buf[..buf.len().min(16)];
                    let line = shown
                        .split(|b| *b == b'\r' || *b == b'\n')
                        .next()
                        .unwrap_or(shown);
                    return Err(ProtocolError::HttpOnBeatsPort(
                        String::from_utf8_lossy(line).into_owned(),
                    ));
                }
            }
        }
        return Err(ProtocolError::UnsupportedVersion(version));
    }
    if buf.len() < 2 {
        return Ok(None);
    }
    let max = limits.max_frame_bytes;
    match buf[1] {
        TYPE_WINDOW => {
            if buf.len() < 6 {
                return Ok(None);
            }
            let count = be32(&buf[2..6]);
            buf.advance(6);
            Ok(Some(Parsed::Frame(Frame::Window { version, count })))
        }
        TYPE_JSON => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let seq = be32(&buf[2..6]);
            let len = be32(&buf[6..10]);
            if len > max {
                return Err(ProtocolError::FrameTooLarge {
                    kind: 'J',
                    len: len.into(),
                    limit: max,
                });
            }
            let total = 10 + len as usize;
            if buf.len() < total {
                // A large frame's room is made once its memory is reserved
                // (`Session::make_room`), not on the word of its header.
                if total <= LARGE_FRAME_BYTES {
                    buf.reserve(total - buf.len());
                }
                return Ok(None);
            }
            buf.advance(10);
            // An inflated payload is split off its `C` frame's buffer, not copied: that
            // buffer lives only as long as the frame, and its events (one window's) are
            // queued and written together, so a chunk is freed with its last event.
            let payload = if inside_compressed {
                buf.split_to(len as usize).freeze()
            } else {
                take_payload(buf, len as usize)
            };
            Ok(Some(Parsed::Frame(Frame::Data(DataFrame {
                version,
                seq,
                payload: Payload::Json(payload),
            }))))
        }
        TYPE_DATA => parse_data(buf, version, max),
        TYPE_COMPRESSED => {
            if inside_compressed {
                return Err(ProtocolError::NestedCompressed);
            }
            if buf.len() < 6 {
                return Ok(None);
            }
            let len = be32(&buf[2..6]);
            if len > max {
                return Err(ProtocolError::FrameTooLarge {
                    kind: 'C',
                    len: len.into(),
                    limit: max,
                });
            }
            buf.advance(6);
            Ok(Some(Parsed::Compressed(len as usize)))
        }
        other => Err(ProtocolError::UnknownFrameType(other)),
    }
}

/// `D`: u32 seq, u32 pair count, then per pair u32 key len, key, u32 value len, value.
/// The whole frame is scanned before anything is consumed; its size is capped by
/// `max_frame_bytes` as the scan goes.
fn parse_data(buf: &mut BytesMut, version: u8, max: u32) -> Result<Option<Parsed>, ProtocolError> {
    if buf.len() < 10 {
        return Ok(None);
    }
    let seq = be32(&buf[2..6]);
    let pairs = be32(&buf[6..10]) as u64;
    let too_large = |len: u64| ProtocolError::FrameTooLarge {
        kind: 'D',
        len,
        limit: max,
    };
    // Each pair takes at least 8 bytes of lengths.
    if pairs * 8 > u64::from(max) {
        return Err(too_large(pairs * 8));
    }
    let mut pos = 10usize;
    for _ in 0..pairs * 2 {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let len = be32(&buf[pos..pos + 4]) as usize;
        pos += 4 + len;
        if (pos - 10) as u64 > u64::from(max) {
            return Err(too_large((pos - 10) as u64));
        }
    }
    if buf.len() < pos {
        if pos <= LARGE_FRAME_BYTES {
            buf.reserve(pos - buf.len());
        }
        return Ok(None);
    }
    buf.advance(10);
    let mut fields = Vec::with_capacity(pairs as usize);
    for _ in 0..pairs {
        let key_len = be32(&buf[..4]) as usize;
        buf.advance(4);
        let key = take_payload(buf, key_len);
        let value_len = be32(&buf[..4]) as usize;
        buf.advance(4);
        let value = take_payload(buf, value_len);
        fields.push((key, value));
    }
    if pos > LARGE_FRAME_BYTES {
        detach(buf);
    }
    Ok(Some(Parsed::Frame(Frame::Data(DataFrame {
        version,
        seq,
        payload: Payload::Pairs(fields),
    }))))
}

/// Bytes of a partial `D` frame known so far: its header and every key or value whose
/// length prefix is buffered.
fn data_frame_known_len(buf: &[u8]) -> usize {
    let pairs = u64::from(be32(&buf[6..10]));
    let mut pos = 10usize;
    for _ in 0..pairs * 2 {
        if buf.len() < pos + 4 {
            break;
        }
        pos += 4 + be32(&buf[pos..pos + 4]) as usize;
    }
    pos
}

/// The first `len` bytes of `buf`, taken off it. A small payload is copied, so the buffer
/// stays unshared and is reused in place; a large one keeps the allocation it was read
/// into, and the buffer's tail moves to a fresh allocation ([`detach`]), so that memory
/// goes when the event does, not when the connection does.
fn take_payload(buf: &mut BytesMut, len: usize) -> Bytes {
    if len <= LARGE_FRAME_BYTES {
        let payload = Bytes::copy_from_slice(&buf[..len]);
        buf.advance(len);
        return payload;
    }
    let payload = buf.split_to(len).freeze();
    detach(buf);
    payload
}

/// Moves what `buf` holds (at most the rest of one read) into an allocation of its own,
/// letting go of the one it shared with a large frame.
fn detach(buf: &mut BytesMut) {
    *buf = BytesMut::from(&buf[..]);
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Client-side codec: decodes the server's ACK frames.
#[derive(Debug, Default)]
pub struct AckDecoder;

impl tokio_util::codec::Decoder for AckDecoder {
    type Item = Ack;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Ack>, DecodeError> {
        if src.len() < 6 {
            return Ok(None);
        }
        let fail = |error| DecodeError { offset: 0, error };
        let version = src[0];
        if version != VERSION_1 && version != VERSION_2 {
            return Err(fail(ProtocolError::UnsupportedVersion(version)));
        }
        if src[1] != TYPE_ACK {
            return Err(fail(ProtocolError::UnknownFrameType(src[1])));
        }
        let seq = be32(&src[2..6]);
        src.advance(6);
        Ok(Some(Ack { version, seq }))
    }
}
