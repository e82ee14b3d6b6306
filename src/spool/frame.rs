//! The on-disk layouts: a segment's header and a record's frame. Pure: bytes in, headers
//! and verdicts out; the scanner, the writer and the recovery all go through here.
//!
//! A frame is a 32-byte header and the payload, integers little-endian:
//!
//! | bytes  | field                                                         |
//! |--------|---------------------------------------------------------------|
//! | 0..4   | payload length                                                |
//! | 4..12  | xxh3-64 of the payload                                        |
//! | 12..20 | sequence number (strictly increasing within a segment)        |
//! | 20..28 | append time, milliseconds since the Unix epoch                |
//! | 28..32 | low 32 bits of xxh3-64 of bytes 0..28 (the header's own check) |
//!
//! A record framed whole by its appender gets bytes 0..12 (length, payload hash) on the
//! appender's thread; one whose document is written from its own bytes gets its payload
//! hash from the writer, which hashes it where it has just copied it (hot in cache, one
//! pass) rather than the appender reading the document once more. The writer stamps
//! 12..32 when it orders the batch: [`order`], then [`seal`] once bytes 0..28 are final. The header check lets the scanner reject a candidate offset in
//! garbage without hashing a payload (resynchronising after corruption costs one short
//! hash per byte, not one payload hash), and it covers the length, so a flipped length
//! bit is caught before it can send the scanner past good frames.

use twox_hash::XxHash3_64;

/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: usize = 32;
/// Bytes of a segment header: magic, base sequence number, xxh3-64 of the two.
pub const SEGMENT_HEADER_BYTES: usize = 24;
/// First bytes of every segment file; the last byte is the format version.
pub const SEGMENT_MAGIC: [u8; 8] = *b"LBDSPOL1";

/// A frame header that passed its own check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub payload_hash: u64,
    pub seq: u64,
    pub appended_ms: u64,
}

impl FrameHeader {
    /// Header and payload bytes.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_BYTES + self.len as usize
    }
}

/// What the bytes at the start of a buffer are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A whole valid frame of `header.frame_len()` bytes.
    Frame(FrameHeader),
    /// Too few bytes to decide: a partial header, or a valid header whose payload has
    /// not all arrived. Not an error (STYLE.md habit 2); at the end of a file it is a
    /// torn tail.
    NeedMore,
    /// Not a frame: bad header check, a length over the limit, or a payload whose hash
    /// does not match.
    Invalid,
}

/// Writes the appender's half of a frame: length and payload hash, with the writer's
/// half (sequence number, time, header check) zeroed until [`stamp`].
pub fn encode_unstamped(payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    out.extend_from_slice(payload);
    describe_payload(&mut out[start..]);
}

/// Fills bytes 0..12 of the frame at the start of `frame` (header and payload, nothing
/// after) from its payload: the length and the payload hash.
pub fn describe_payload(frame: &mut [u8]) {
    let (head, payload) = frame.split_at_mut(FRAME_HEADER_BYTES);
    describe(head, payload.len() as u32, XxHash3_64::oneshot(payload));
}

/// Fills bytes 0..12 of the frame header at the start of `frame` from a payload of
/// `len` bytes that hashes to `payload_hash` (one not contiguous with its header).
pub fn describe(frame: &mut [u8], len: u32, payload_hash: u64) {
    frame[0..4].copy_from_slice(&len.to_le_bytes());
    frame[4..12].copy_from_slice(&payload_hash.to_le_bytes());
}

/// Fills in the writer's half of the frame header at the start of `frame`.
pub fn stamp(frame: &mut [u8], seq: u64, appended_ms: u64) {
    order(frame, seq, appended_ms);
    seal(frame);
}

/// Writes the sequence number and time into the frame header at the start of `frame`,
/// leaving its check for [`seal`].
pub fn order(frame: &mut [u8], seq: u64, appended_ms: u64) {
    frame[12..20].copy_from_slice(&seq.to_le_bytes());
    frame[20..28].copy_from_slice(&appended_ms.to_le_bytes());
}

/// Writes the header's own check over bytes 0..28, all of which must be final.
pub fn seal(frame: &mut [u8]) {
    let check = XxHash3_64::oneshot(&frame[..28]) as u32;
    frame[28..32].copy_from_slice(&check.to_le_bytes());
}

/// A whole stamped frame (tests and tools; the writer stamps in place).
pub fn encode(seq: u64, appended_ms: u64, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    encode_unstamped(payload, out);
    stamp(&mut out[start..], seq, appended_ms);
}

/// The payload length an unstamped or stamped frame at the start of `frame` declares.
pub fn declared_len(frame: &[u8]) -> u32 {
    u32::from_le_bytes(frame[0..4].try_into().expect("4 bytes"))
}

/// Checks the header at the start of `buf` only: its own check and the length limit.
pub fn decode_header(buf: &[u8], max_record_bytes: u32) -> Option<FrameHeader> {
    let head = buf.get(..FRAME_HEADER_BYTES)?;
    let u64_at = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().expect("8 bytes"));
    let check = u32::from_le_bytes(head[28..32].try_into().expect("4 bytes"));
    if XxHash3_64::oneshot(&head[..28]) as u32 != check {
        return None;
    }
    let len = declared_len(head);
    if len > max_record_bytes {
        return None;
    }
    Some(FrameHeader {
        len,
        payload_hash: u64_at(4),
        seq: u64_at(12),
        appended_ms: u64_at(20),
    })
}

/// Decodes the frame at the start of `buf`, checking the length against the limit
/// before waiting for the payload (STYLE.md habit 1).
pub fn decode(buf: &[u8], max_record_bytes: u32) -> Decoded {
    if buf.len() < FRAME_HEADER_BYTES {
        return Decoded::NeedMore;
    }
    let Some(header) = decode_header(buf, max_record_bytes) else {
        return Decoded::Invalid;
    };
    let Some(payload) = buf.get(FRAME_HEADER_BYTES..header.frame_len()) else {
        return Decoded::NeedMore;
    };
    if XxHash3_64::oneshot(payload) != header.payload_hash {
        return Decoded::Invalid;
    }
    Decoded::Frame(header)
}

/// The header that starts a segment whose first record has sequence number `base`.
pub fn segment_header(base: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0; SEGMENT_HEADER_BYTES];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..16].copy_from_slice(&base.to_le_bytes());
    let check = XxHash3_64::oneshot(&h[..16]);
    h[16..24].copy_from_slice(&check.to_le_bytes());
    h
}

/// Whether `buf` starts with a valid header for a segment of base `base` (the file name
/// is the authority on the base; the header confirms the file is ours and whole).
pub fn segment_header_valid(buf: &[u8], base: u64) -> bool {
    buf.get(..SEGMENT_HEADER_BYTES) == Some(&segment_header(base)[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 1024;

    fn frame(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(seq, 1_700_000_000_000, payload, &mut out);
        out
    }

    #[test]
    fn a_stamped_frame_decodes_to_its_header() {
        let f = frame(7, b"hello");
        assert_eq!(f.len(), FRAME_HEADER_BYTES + 5);
        let Decoded::Frame(h) = decode(&f, MAX) else {
            panic!("valid frame not decoded: {:?}", decode(&f, MAX));
        };
        assert_eq!(
            (h.len, h.seq, h.appended_ms, h.frame_len()),
            (5, 7, 1_700_000_000_000, f.len())
        );
    }

    #[test]
    fn every_prefix_of_a_frame_needs_more_bytes() {
        let f = frame(1, b"a record of some length");
        for n in 0..f.len() {
            assert_eq!(
                decode(&f[..n], MAX),
                Decoded::NeedMore,
                "prefix of {n} bytes"
            );
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_makes_the_frame_invalid() {
        let f = frame(3, b"payload bytes");
        for i in 0..f.len() {
            for bit in 0..8 {
                let mut g = f.clone();
                g[i] ^= 1 << bit;
                let d = decode(&g, MAX);
                // A flipped length bit may make the frame claim more bytes than exist.
                assert!(
                    d == Decoded::Invalid || (i < 4 && d == Decoded::NeedMore),
                    "bit {bit} of byte {i} flipped still decodes as {d:?}"
                );
            }
        }
    }

    #[test]
    fn a_length_over_the_limit_is_rejected_from_the_header_alone() {
        let mut f = frame(1, &[0; 100]);
        f.truncate(FRAME_HEADER_BYTES);
        assert_eq!(decode(&f, 99), Decoded::Invalid);
        assert_eq!(decode(&f, 100), Decoded::NeedMore);
    }

    #[test]
    fn an_unstamped_frame_is_not_valid_on_disk() {
        let mut f = Vec::new();
        encode_unstamped(b"x", &mut f);
        assert_eq!(decode(&f, MAX), Decoded::Invalid);
        stamp(&mut f, 0, 0);
        assert!(matches!(decode(&f, MAX), Decoded::Frame(_)));
    }

    #[test]
    fn a_header_of_zeros_fails_its_own_check() {
        // The scanner passes runs of zeros (a direct write's padding) on this.
        assert_eq!(decode_header(&[0; FRAME_HEADER_BYTES], u32::MAX), None);
    }

    #[test]
    fn segment_header_names_its_base() {
        let h = segment_header(42);
        assert!(segment_header_valid(&h, 42));
        assert!(
            !segment_header_valid(&h, 43),
            "a renamed segment is detected"
        );
        assert!(!segment_header_valid(&h[..23], 42));
        let mut bad = h;
        bad[20] ^= 1;
        assert!(!segment_header_valid(&bad, 42));
    }
}
