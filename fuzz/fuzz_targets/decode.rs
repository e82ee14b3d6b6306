//! Arbitrary bytes through `protocol::Session` (the driver the connection reads with),
//! whole and in chunks, as a connection would see them. Invariants (STYLE.md habits 2
//! and 11):
//! - nothing panics;
//! - decoding in chunks yields the same frames, windows and error kind as decoding whole;
//! - every completed window holds exactly its announced data frames, and its ACK carries
//!   the window's version byte and its own last data frame's seq, never more.
//!
//! Input layout: byte 0 picks the chunking (low 3 bits: largest read, high 5 bits: seed
//! of the read sizes); the rest is the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lumberd::protocol::{DataFrame, Frame, Limits, Transcript};

const LIMITS: Limits = Limits {
    max_frame_bytes: 64 * 1024,
    max_inflated_bytes: 1024 * 1024,
    max_window_events: 64,
};

const MAX_READ: [usize; 8] = [1, 2, 3, 7, 16, 64, 512, 4096];

/// `data` in reads of 1..=`max_read` bytes, sizes drawn by xorshift64* from `seed`.
fn reads(data: &[u8], max_read: usize, mut seed: u64) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let (head, tail) = rest.split_at((1 + seed as usize % max_read).min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

fn check_windows(r: &Transcript) {
    let mut windows = r.windows.iter();
    let mut open: Option<(u8, u32, u32)> = None;
    for frame in &r.frames {
        match *frame {
            Frame::Window { version, count } => {
                assert!(open.is_none(), "W accepted inside an open window");
                assert!(
                    count > 0 && count <= LIMITS.max_window_events,
                    "W {count} accepted"
                );
                open = Some((version, count, 0));
            }
            Frame::Data(DataFrame { seq, .. }) => {
                let (version, expected, received) =
                    open.as_mut().expect("data frame accepted outside a window");
                *received += 1;
                if received == expected {
                    let w = windows.next().expect("a full window did not complete");
                    let ack = w.ack();
                    assert_eq!(
                        (ack.version, ack.seq, w.count),
                        (*version, seq, *expected),
                        "ACK must carry the window's version and its last frame's seq"
                    );
                    open = None;
                }
            }
        }
    }
    assert!(
        windows.next().is_none(),
        "a window completed without its frames"
    );
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let whole = Transcript::replay(LIMITS, [data]);
    check_windows(&whole);
    let chunked = Transcript::replay(
        LIMITS,
        reads(data, MAX_READ[(control & 7) as usize], u64::from(control >> 3) + 1),
    );
    check_windows(&chunked);

    let kind = |r: &Transcript| r.error.as_ref().map(|e| e.error.kind());
    assert_eq!(
        kind(&chunked),
        kind(&whole),
        "chunking changed the error: whole {:?}, chunked {:?}",
        whole.error,
        chunked.error
    );
    assert_eq!(
        chunked.frames.len(),
        whole.frames.len(),
        "chunking changed the frame count"
    );
    assert_eq!(chunked.frames, whole.frames, "chunking changed the frames");
    assert_eq!(
        chunked.windows, whole.windows,
        "chunking changed the windows"
    );
});
