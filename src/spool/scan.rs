//! Reads a segment's bytes as they arrive: records, corrupt regions skipped, and the
//! tail that is not a whole record. Pure (bytes in, events out), so the recovery at
//! open, the live reader and the fuzz target drive the same code on files, buffers and
//! arbitrary chunkings.
//!
//! Corruption is skipped by resynchronising: at an offset that does not hold a valid
//! frame the scanner moves one byte on and tries again, until a frame whose header
//! check, payload hash and sequence number all hold. One corrupt record therefore costs
//! that record only, and a frame is never taken from inside one that was accepted.

use bytes::{Buf, Bytes, BytesMut};

use super::frame::{
    decode, segment_header_valid, Decoded, FrameHeader, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};

/// What the scanner found next in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEvent {
    /// A valid record, at file offset `offset` (its header's first byte).
    Record {
        header: FrameHeader,
        offset: u64,
        payload: Bytes,
    },
    /// `bytes` bytes at `offset` that are not records (a flipped bit, a bad segment
    /// header, garbage), with a valid record after them.
    Corrupt { offset: u64, bytes: u64 },
    /// At the end of the segment: `bytes` bytes at `offset` after the last valid record
    /// (a write torn by a crash, or damage at the end).
    Tail { offset: u64, bytes: u64 },
}

impl ScanEvent {
    /// The file offset just past this event.
    pub fn end(&self) -> u64 {
        match self {
            ScanEvent::Record { header, offset, .. } => offset + header.frame_len() as u64,
            ScanEvent::Corrupt { offset, bytes } | ScanEvent::Tail { offset, bytes } => {
                offset + bytes
            }
        }
    }
}

/// Scans one segment. Feed it the file's bytes in order, in any chunks; `next` says
/// what the bytes at the front of the buffer are and removes them.
#[derive(Debug, Clone)]
pub struct Scanner {
    base: u64,
    max_record_bytes: u32,
    /// File offset of the buffer's first byte.
    offset: u64,
    header_checked: bool,
    header_valid: bool,
    /// Start of the invalid bytes seen since the last record.
    garbage_from: Option<u64>,
    /// Whether any of them is not zero (zeros to the end are padding, not a tail).
    garbage_nonzero: bool,
    last_seq: Option<u64>,
    /// A record found after garbage, returned on the call after the `Corrupt` event.
    held: Option<(FrameHeader, u64, Bytes)>,
}

impl Scanner {
    /// A scanner for a whole segment file whose name says its first sequence number is
    /// `base`; the buffer starts at file offset 0.
    pub fn new(base: u64, max_record_bytes: u32) -> Scanner {
        Scanner {
            base,
            max_record_bytes,
            offset: 0,
            header_checked: false,
            header_valid: false,
            garbage_from: None,
            garbage_nonzero: false,
            last_seq: None,
            held: None,
        }
    }

    /// A scanner that starts at `offset`, a record boundary past the segment header
    /// (a read position saved earlier); the buffer starts at that offset.
    pub fn resume(base: u64, offset: u64, max_record_bytes: u32) -> Scanner {
        Scanner {
            offset,
            header_checked: true,
            header_valid: true,
            ..Scanner::new(base, max_record_bytes)
        }
    }

    /// File offset of the buffer's first byte: everything before it has been reported.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the segment header was checked and valid (false until it is checked).
    pub fn header_valid(&self) -> bool {
        self.header_valid
    }

    /// The sequence number of the last record returned.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// The next event from the bytes at the front of `buf`, which are removed. `None`
    /// when more bytes are needed, or, with `eof` (no bytes will follow), when the
    /// segment is done.
    pub fn next(&mut self, buf: &mut BytesMut, eof: bool) -> Option<ScanEvent> {
        if let Some((header, offset, payload)) = self.held.take() {
            return Some(ScanEvent::Record {
                header,
                offset,
                payload,
            });
        }
        if !self.header_checked {
            if buf.len() < SEGMENT_HEADER_BYTES {
                return self.end(buf, eof);
            }
            self.header_checked = true;
            self.header_valid = segment_header_valid(buf, self.base);
            if !self.header_valid {
                self.garbage_from = Some(self.offset);
                self.garbage_nonzero = true;
            }
            self.skip(buf, SEGMENT_HEADER_BYTES);
        }
        loop {
            if buf.is_empty() {
                return self.end(buf, eof);
            }
            match decode(buf, self.max_record_bytes) {
                Decoded::Frame(h) if self.in_order(h.seq) => {
                    let offset = self.offset;
                    // The payload alone is split off: one reference to the buffer per
                    // record, not a frame's and then its slice's.
                    buf.advance(FRAME_HEADER_BYTES);
                    let payload = buf.split_to(h.len as usize).freeze();
                    self.offset += h.frame_len() as u64;
                    self.last_seq = Some(h.seq);
                    if let Some(from) = self.garbage_from.take() {
                        self.garbage_nonzero = false;
                        self.held = Some((h, offset, payload));
                        return Some(ScanEvent::Corrupt {
                            offset: from,
                            bytes: offset - from,
                        });
                    }
                    return Some(ScanEvent::Record {
                        header: h,
                        offset,
                        payload,
                    });
                }
                // More bytes may still make this a frame, unless none will come: then
                // it is garbage like any other (a torn record, or a false header).
                Decoded::NeedMore if !eof => return None,
                _ => {
                    self.garbage_from.get_or_insert(self.offset);
                    // A header of zeros fails its own check (a test pins it), so a run
                    // of zeros is passed in one step, to its last header's width: a
                    // direct write's padding is up to a block of them.
                    let zeros = buf.iter().take_while(|b| **b == 0).count();
                    if zeros == 0 {
                        self.garbage_nonzero = true;
                    }
                    self.skip(buf, zeros.saturating_sub(FRAME_HEADER_BYTES).max(1));
                }
            }
        }
    }

    /// Sequence numbers rise within a segment and start at its base: a frame that
    /// breaks this is stale or forged bytes, whatever its checksums say.
    fn in_order(&self, seq: u64) -> bool {
        seq >= self.base && self.last_seq.is_none_or(|last| seq > last)
    }

    fn skip(&mut self, buf: &mut BytesMut, n: usize) {
        buf.advance(n);
        self.offset += n as u64;
    }

    /// At the end of the bytes available: at the end of the file, whatever is left
    /// (bytes that never became a record) is the tail, unless it is all zeros after a
    /// valid header or a record: the padding of a direct write (direct.rs), no damage.
    fn end(&mut self, buf: &mut BytesMut, eof: bool) -> Option<ScanEvent> {
        if !eof {
            return None;
        }
        let from = self.garbage_from.take().unwrap_or(self.offset);
        let rest = buf.len();
        self.garbage_nonzero |= buf.iter().any(|b| *b != 0);
        self.skip(buf, rest);
        self.header_checked = true;
        let zeros = !std::mem::take(&mut self.garbage_nonzero);
        let padding = zeros && (self.header_valid || self.last_seq.is_some());
        (self.offset > from && !padding).then(|| ScanEvent::Tail {
            offset: from,
            bytes: self.offset - from,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::frame::{encode, segment_header};
    use super::*;
    use proptest::prelude::*;

    const MAX: u32 = 4096;

    /// A segment of base `base` holding `payloads` as records base, base+1, ...
    pub(crate) fn segment(base: u64, payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = segment_header(base).to_vec();
        for (i, p) in payloads.iter().enumerate() {
            encode(base + i as u64, 1_000 + i as u64, p, &mut out);
        }
        out
    }

    /// Every event from scanning `data` fed in chunks of the given sizes (cycled).
    pub(crate) fn scan_chunked(base: u64, data: &[u8], chunks: &[usize]) -> Vec<ScanEvent> {
        let mut s = Scanner::new(base, MAX);
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        let mut rest = data;
        let mut i = 0;
        while !rest.is_empty() {
            let n = chunks[i % chunks.len()].clamp(1, rest.len());
            i += 1;
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            while let Some(e) = s.next(&mut buf, false) {
                events.push(e);
            }
        }
        while let Some(e) = s.next(&mut buf, true) {
            events.push(e);
        }
        events
    }

    fn scan(base: u64, data: &[u8]) -> Vec<ScanEvent> {
        scan_chunked(base, data, &[usize::MAX])
    }

    fn seqs(events: &[ScanEvent]) -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| match e {
                ScanEvent::Record { header, .. } => Some(header.seq),
                _ => None,
            })
            .collect()
    }

    /// Events must tile the segment: each starts where the previous one ended, and
    /// only zeros (padding) may follow the last.
    fn assert_tiles(events: &[ScanEvent], data: &[u8], header: bool) {
        let mut at = if header {
            SEGMENT_HEADER_BYTES as u64
        } else {
            0
        };
        for e in events {
            let start = match e {
                ScanEvent::Record { offset, .. }
                | ScanEvent::Corrupt { offset, .. }
                | ScanEvent::Tail { offset, .. } => *offset,
            };
            assert_eq!(start, at, "event {e:?} does not start where the last ended");
            at = e.end();
        }
        // Padding follows a valid header or a record (the fuzz target's rule too).
        let rest = &data[(at as usize).min(data.len())..];
        let records = events.iter().any(|e| matches!(e, ScanEvent::Record { .. }));
        assert!(
            rest.iter().all(|b| *b == 0) && (rest.is_empty() || header || records),
            "events end at {at} of {} bytes, and what follows is not padding",
            data.len()
        );
    }

    #[test]
    fn records_come_back_in_order_with_their_offsets() {
        let data = segment(10, &[b"one", b"two", b"three"]);
        let events = scan(10, &data);
        assert_eq!(seqs(&events), [10, 11, 12]);
        let ScanEvent::Record {
            payload, offset, ..
        } = &events[1]
        else {
            panic!("{events:?}")
        };
        assert_eq!(
            (&payload[..], *offset),
            (
                &b"two"[..],
                (SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + 3) as u64
            )
        );
        assert_tiles(&events, &data, true);
    }

    #[test]
    fn a_torn_last_record_is_the_tail() {
        let data = segment(0, &[b"kept", b"torn record"]);
        for cut in 1..FRAME_HEADER_BYTES + 11 {
            let torn = &data[..data.len() - cut];
            let events = scan(0, torn);
            assert_eq!(seqs(&events), [0], "cut {cut}");
            let whole = (FRAME_HEADER_BYTES + 11 - cut) as u64;
            assert!(
                matches!(events.last(), Some(ScanEvent::Tail { bytes, .. }) if *bytes == whole),
                "cut {cut}: {events:?}"
            );
        }
    }

    #[test]
    fn a_flipped_byte_in_the_middle_costs_only_its_record() {
        let data = segment(5, &[b"aaaa", b"bbbbbbbb", b"cccc"]);
        let second = SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + 4;
        for i in second..second + FRAME_HEADER_BYTES + 8 {
            let mut bad = data.clone();
            bad[i] ^= 0x40;
            let events = scan(5, &bad);
            assert_eq!(seqs(&events), [5, 7], "byte {i} flipped");
            assert!(
                events.contains(&ScanEvent::Corrupt {
                    offset: second as u64,
                    bytes: (FRAME_HEADER_BYTES + 8) as u64
                }),
                "byte {i}: {events:?}"
            );
            assert_tiles(&events, &bad, true);
        }
    }

    #[test]
    fn a_bad_segment_header_is_corrupt_and_its_records_still_read() {
        let mut data = segment(3, &[b"x", b"y"]);
        data[2] ^= 1;
        let events = scan(3, &data);
        assert_eq!(
            events[0],
            ScanEvent::Corrupt {
                offset: 0,
                bytes: SEGMENT_HEADER_BYTES as u64
            }
        );
        assert_eq!(seqs(&events), [3, 4]);
        assert_tiles(&events, &data, false);
    }

    #[test]
    fn a_short_or_empty_file_is_all_tail() {
        assert_eq!(scan(0, &[]), []);
        assert_eq!(
            scan(0, &segment(0, &[])[..10]),
            [ScanEvent::Tail {
                offset: 0,
                bytes: 10
            }]
        );
        assert_eq!(scan(0, &segment(0, &[])), []);
    }

    #[test]
    fn records_out_of_sequence_are_not_taken() {
        // A segment holding a copy of its own first record again (stale bytes) and a
        // record below the base (a file renamed by hand).
        let mut data = segment(8, &[b"first", b"second"]);
        encode(8, 0, b"first", &mut data);
        encode(3, 0, b"below base", &mut data);
        encode(10, 0, b"next", &mut data);
        assert_eq!(seqs(&scan(8, &data)), [8, 9, 10]);
    }

    #[test]
    fn a_resumed_scanner_starts_at_a_record_boundary() {
        let data = segment(0, &[b"a", b"b", b"c"]);
        let at = SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + 1;
        let mut s = Scanner::resume(0, at as u64, MAX);
        let mut buf = BytesMut::from(&data[at..]);
        let mut got = Vec::new();
        while let Some(e) = s.next(&mut buf, true) {
            got.push(e);
        }
        assert_eq!(seqs(&got), [1, 2]);
    }

    #[test]
    fn zeros_to_the_end_are_padding_and_zeros_before_a_record_are_corrupt() {
        let records = segment(4, &[b"one", b"two"]);
        for zeros in [1, 31, 32, 33, 4096, 10_000] {
            let mut padded = records.clone();
            padded.resize(records.len() + zeros, 0);
            let events = scan_chunked(4, &padded, &[7, 4096, 1]);
            assert_eq!(seqs(&events), [4, 5], "{zeros} zeros");
            assert_eq!(
                events.len(),
                2,
                "{zeros} zeros of padding reported: {events:?}"
            );
            // Zeros with a record after them are damage, whatever their length.
            encode(6, 0, b"three", &mut padded);
            let events = scan_chunked(4, &padded, &[7, 4096, 1]);
            assert_eq!(seqs(&events), [4, 5, 6], "{zeros} zeros, then a record");
            assert!(
                events.contains(&ScanEvent::Corrupt {
                    offset: records.len() as u64,
                    bytes: zeros as u64
                }),
                "{zeros} zeros before a record: {events:?}"
            );
        }
        // A torn record is still a tail when zeros follow it.
        let mut torn = records.clone();
        encode(6, 0, b"three", &mut torn);
        torn.truncate(records.len() + FRAME_HEADER_BYTES + 2);
        torn.resize(torn.len() + 100, 0);
        assert_eq!(
            scan(4, &torn).last(),
            Some(&ScanEvent::Tail {
                offset: records.len() as u64,
                bytes: (FRAME_HEADER_BYTES + 2 + 100) as u64
            })
        );
        // A file of zeros has no valid header: damage, not padding, whatever its length
        // (shorter than a header too).
        for len in [7, 24, 5000] {
            assert_eq!(
                scan(4, &vec![0; len]),
                [ScanEvent::Tail {
                    offset: 0,
                    bytes: len as u64
                }],
                "{len} zeros"
            );
        }
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_events(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..8),
            flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..3),
            cut in 0usize..64,
            chunks in prop::collection::vec(1usize..100, 1..8),
        ) {
            let refs: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
            let mut data = segment(1, &refs);
            for (i, x) in &flips {
                let i = i.index(data.len());
                data[i] ^= x;
            }
            data.truncate(data.len().saturating_sub(cut));
            let whole = scan(1, &data);
            prop_assert_eq!(&scan_chunked(1, &data, &chunks), &whole);
            assert_tiles(&whole, &data, data.len() >= SEGMENT_HEADER_BYTES && segment_header_valid(&data, 1));
            if flips.is_empty() && cut == 0 {
                prop_assert_eq!(seqs(&whole), (1..=payloads.len() as u64).collect::<Vec<_>>());
            }
        }
    }
}
