//! Arbitrary bytes through `Codec` + `WindowTracker`, whole and in chunks, as a
//! connection would see them. Invariants (STYLE.md habits 2 and 11):
//! - nothing panics;
//! - decoding in chunks yields the same frames, windows and error kind as decoding whole;
//! - every completed window holds exactly its announced data frames, and its ACK carries
//!   the window's version byte and its own last data frame's seq, never more.
//!
//! Input layout: byte 0 picks the chunking (low 3 bits: largest read, high 5 bits: seed
//! of the read sizes); the rest is the stream.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use lumberd::protocol::{Codec, CompletedWindow, Frame, Limits, ProtocolError, WindowTracker};
use tokio_util::codec::Decoder;

const LIMITS: Limits = Limits {
    max_frame_bytes: 64 * 1024,
    max_inflated_bytes: 1024 * 1024,
    max_window_events: 64,
};

const MAX_READ: [usize; 8] = [1, 2, 3, 7, 16, 64, 512, 4096];

#[derive(Debug, PartialEq)]
struct Replay {
    frames: Vec<Frame>,
    windows: Vec<CompletedWindow>,
    error: Option<ProtocolError>,
}

fn replay(data: &[u8], max_read: usize, mut seed: u64) -> Replay {
    let mut codec = Codec::new(LIMITS);
    let mut tracker = WindowTracker::new(LIMITS.max_window_events);
    let mut out = Replay {
        frames: Vec::new(),
        windows: Vec::new(),
        error: None,
    };
    let mut buf = BytesMut::new();
    let mut accept = |frame: Frame, out: &mut Replay| match tracker.on_frame(&frame) {
        Ok(done) => {
            out.frames.push(frame);
            out.windows.extend(done);
            true
        }
        Err(e) => {
            out.error = Some(e);
            false
        }
    };
    let mut rest = data;
    while !rest.is_empty() {
        // xorshift64*: read sizes 1..=max_read.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = (1 + seed as usize % max_read).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if !drain(&mut codec, &mut buf, false, &mut out, &mut accept) {
            return out;
        }
    }
    if !drain(&mut codec, &mut buf, true, &mut out, &mut accept) {
        return out;
    }
    out.error = tracker.finish().err();
    out
}

/// Decodes everything `buf` holds (as at end of stream when `eof`); false once a codec
/// error or a refused frame ended the replay.
fn drain(
    codec: &mut Codec,
    buf: &mut BytesMut,
    eof: bool,
    out: &mut Replay,
    accept: &mut impl FnMut(Frame, &mut Replay) -> bool,
) -> bool {
    loop {
        let decoded = if eof {
            codec.decode_eof(buf)
        } else {
            codec.decode(buf)
        };
        match decoded {
            Ok(Some(frame)) => {
                if !accept(frame, out) {
                    return false;
                }
            }
            Ok(None) => return true,
            Err(e) => {
                out.error = Some(e.error);
                return false;
            }
        }
    }
}

fn check_windows(r: &Replay) {
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
            Frame::Json { seq, .. } | Frame::Data { seq, .. } => {
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
    let whole = replay(data, usize::MAX, 1);
    check_windows(&whole);
    let chunked = replay(
        data,
        MAX_READ[(control & 7) as usize],
        u64::from(control >> 3) + 1,
    );
    check_windows(&chunked);

    let kind = |r: &Replay| r.error.as_ref().map(ProtocolError::kind);
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
