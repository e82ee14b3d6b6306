//! Arbitrary bytes as a spool segment file through `spool::scan::Scanner`, whole and in
//! chunks, as the recovery and the reader see them. Invariants:
//! - nothing panics or loops;
//! - reading in chunks yields the same records, corrupt regions and tail as whole;
//! - the events tile the file: each starts where the last ended, and they end at its end;
//! - every record is a valid frame at its offset, with sequence numbers rising from the
//!   segment's base;
//! - in built mode (valid frames from the input, then damaged), every frame the damage
//!   did not touch is read back: corruption costs only the records it hits.
//!
//! Input layout: byte 0 picks the chunking (low 3 bits: largest read, high 4 bits:
//! seed of the read sizes) and, bit 3, the mode. Raw mode: the rest is the file. Built
//! mode: byte 1 is a count of damages, then 3 bytes per damage (u16 offset, xor byte; an
//! xor of 0 cuts the file there), then payloads, each a length byte and its bytes.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use lumberd::spool::frame::{
    decode, encode, segment_header, segment_header_valid, Decoded, SEGMENT_HEADER_BYTES,
};
use lumberd::spool::scan::{ScanEvent, Scanner};

const BASE: u64 = 7;
const MAX_RECORD: u32 = 1024;
const MAX_READ: [usize; 8] = [1, 2, 3, 7, 16, 64, 512, 4096];

fn scan(data: &[u8], max_read: usize, mut seed: u64) -> Vec<ScanEvent> {
    let mut scanner = Scanner::new(BASE, MAX_RECORD);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        // xorshift64*: read sizes 1..=max_read.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = (1 + seed as usize % max_read).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(e) = scanner.next(&mut buf, false) {
            events.push(e);
        }
    }
    while let Some(e) = scanner.next(&mut buf, true) {
        events.push(e);
    }
    assert!(buf.is_empty(), "the scanner left {} bytes unreported", buf.len());
    events
}

fn start(e: &ScanEvent) -> u64 {
    match e {
        ScanEvent::Record { offset, .. }
        | ScanEvent::Corrupt { offset, .. }
        | ScanEvent::Tail { offset, .. } => *offset,
    }
}

fn check(data: &[u8], events: &[ScanEvent]) {
    let header = data.len() >= SEGMENT_HEADER_BYTES && segment_header_valid(data, BASE);
    let mut at = if header { SEGMENT_HEADER_BYTES as u64 } else { 0 };
    let mut last_seq = None;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(start(e), at, "event {i} {e:?} does not start where the last ended");
        at = e.end();
        match e {
            ScanEvent::Record {
                header,
                offset,
                payload,
            } => {
                let o = *offset as usize;
                assert_eq!(decode(&data[o..], MAX_RECORD), Decoded::Frame(*header));
                assert_eq!(&data[o + 32..o + header.frame_len()], &payload[..]);
                assert!(header.seq >= BASE && last_seq.is_none_or(|l| header.seq > l));
                last_seq = Some(header.seq);
            }
            ScanEvent::Corrupt { bytes, .. } => {
                assert!(*bytes > 0);
                assert!(
                    matches!(events.get(i + 1), Some(ScanEvent::Record { .. })),
                    "a corrupt region is followed by a record"
                );
            }
            ScanEvent::Tail { bytes, .. } => {
                assert!(*bytes > 0);
                assert_eq!(i + 1, events.len(), "the tail is the last event");
            }
        }
    }
    // Zeros to the end after a valid header or a record are a direct write's padding,
    // not a tail.
    let rest = &data[(at as usize).min(data.len())..];
    let records = events.iter().any(|e| matches!(e, ScanEvent::Record { .. }));
    assert!(
        rest.iter().all(|b| *b == 0) && (rest.is_empty() || header || records),
        "events end at {at} of {} bytes, and what follows is not padding",
        data.len()
    );
}

/// Built mode: a valid segment from the input's payloads, then its damages. Returns the
/// file and the (offset, length) of each frame no damage touched.
fn build(input: &[u8]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let (&n, rest) = input.split_first().unwrap_or((&0, &[]));
    let n = (n % 4) as usize;
    let (damages, mut payloads) = rest.split_at((3 * n).min(rest.len()));
    let mut data = segment_header(BASE).to_vec();
    let mut frames = Vec::new();
    let mut seq = BASE;
    while let Some((&len, rest)) = payloads.split_first() {
        let (p, rest) = rest.split_at((len as usize).min(rest.len()));
        let at = data.len();
        encode(seq, 0, p, &mut data);
        frames.push((at, data.len() - at));
        seq += 1 + u64::from(len % 3 == 0); // gaps are allowed
        payloads = rest;
    }
    let mut touched = vec![false; data.len()];
    for d in damages.chunks_exact(3) {
        if data.is_empty() {
            break;
        }
        let at = u16::from_le_bytes([d[0], d[1]]) as usize % data.len();
        if d[2] == 0 {
            data.truncate(at);
            touched.truncate(at);
        } else {
            data[at] ^= d[2];
            touched[at] = true;
        }
    }
    let intact = frames
        .into_iter()
        .filter(|&(at, len)| at + len <= data.len() && !touched[at..at + len].contains(&true))
        .collect();
    (data, intact)
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, rest)) = input.split_first() else {
        return;
    };
    let built = control & 8 != 0;
    let (data, intact) = if built {
        build(rest)
    } else {
        (rest.to_vec(), Vec::new())
    };
    let whole = scan(&data, usize::MAX, 1);
    check(&data, &whole);
    let chunked = scan(
        &data,
        MAX_READ[(control & 7) as usize],
        u64::from(control >> 4) + 1,
    );
    assert_eq!(chunked, whole, "chunking changed the events");
    if built && segment_header_valid(&data, BASE) {
        let records: Vec<(u64, u64)> = whole
            .iter()
            .filter_map(|e| match e {
                ScanEvent::Record { offset, .. } => Some((*offset, e.end())),
                _ => None,
            })
            .collect();
        for (at, len) in intact {
            let (at, end) = (at as u64, (at + len) as u64);
            assert!(
                records.iter().any(|&(s, e)| s < end && at < e),
                "the intact frame at {at} was not read back: {whole:?}"
            );
        }
    }
});
