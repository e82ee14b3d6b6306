//! Properties of `protocol::Session` (the decoder and the window bookkeeping, as the
//! connection drives them) over generated streams (STYLE.md habits 2 and 11): any
//! chunking decodes the same, a partial frame is "need more bytes" and never an error,
//! an ACK never passes its window, and no input panics.

use bytes::{Bytes, BytesMut};
use lumberd::protocol::{
    encode_frame, encode_window, CompletedWindow, Compression, DataFrame, DecodeError, Frame,
    Limits, Payload, Session, Step, Transcript,
};
use proptest::prelude::*;

/// One window as a client would send it.
#[derive(Debug, Clone)]
struct Window {
    payloads: Vec<Vec<u8>>,
    level: u32,
}

fn window(max_events: usize, max_payload: usize) -> impl Strategy<Value = Window> {
    (
        prop::collection::vec(
            prop::collection::vec(any::<u8>(), 0..max_payload),
            1..max_events,
        ),
        0u32..=9,
    )
        .prop_map(|(payloads, level)| Window { payloads, level })
}

/// Windows, whether sequence numbers restart at 1 (Filebeat) or run on (pylogbeat).
fn stream(
    max_windows: usize,
    max_events: usize,
    max_payload: usize,
) -> impl Strategy<Value = (Vec<Window>, bool)> {
    (
        prop::collection::vec(window(max_events, max_payload), 1..max_windows),
        any::<bool>(),
    )
}

fn json(version: u8, seq: u32, payload: Bytes) -> Frame {
    Frame::Data(DataFrame {
        version,
        seq,
        payload: Payload::Json(payload),
    })
}

/// The wire bytes, the frames a decoder must yield, and each window's last seq.
fn encode(windows: &[Window], continuous: bool) -> (Vec<u8>, Vec<Frame>, Vec<u32>) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut last_seqs = Vec::new();
    let mut next = 1u32;
    for w in windows {
        let first = if continuous { next } else { 1 };
        encode_window(
            first,
            &w.payloads,
            Compression::from_level(w.level),
            &mut buf,
        );
        frames.push(Frame::Window {
            version: b'2',
            count: w.payloads.len() as u32,
        });
        for (i, p) in w.payloads.iter().enumerate() {
            frames.push(json(b'2', first + i as u32, Bytes::copy_from_slice(p)));
        }
        last_seqs.push(first + w.payloads.len() as u32 - 1);
        next = first + w.payloads.len() as u32;
    }
    (buf.to_vec(), frames, last_seqs)
}

/// Split points (as fractions of the length) to read sizes.
fn split<'a>(bytes: &'a [u8], cuts: &[u16]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| *c as usize * bytes.len() / u16::MAX as usize)
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for p in points.into_iter().chain([bytes.len()]) {
        if p > start {
            out.push(&bytes[start..p]);
            start = p;
        }
    }
    out
}

/// Checks every completed window against the frames the session accepted: it completes
/// exactly at its announced count, and its ACK echoes the window's version and carries
/// its own last data frame's seq.
fn check_windows(t: &Transcript) -> Result<(), TestCaseError> {
    let mut done = t.windows.iter();
    let mut open: Option<(u8, u32, Vec<u32>)> = None;
    for f in &t.frames {
        match f {
            Frame::Window { version, count } => {
                prop_assert!(open.is_none(), "W {} accepted inside an open window", count);
                open = Some((*version, *count, Vec::new()));
            }
            Frame::Data(DataFrame { seq, .. }) => {
                let Some((version, count, seqs)) = open.as_mut() else {
                    return Err(TestCaseError::fail(format!(
                        "data frame seq {seq} accepted outside a window"
                    )));
                };
                seqs.push(*seq);
                if seqs.len() as u32 == *count {
                    let w: &CompletedWindow = done
                        .next()
                        .ok_or_else(|| TestCaseError::fail("a full window did not complete"))?;
                    prop_assert_eq!(w.count, *count);
                    prop_assert_eq!(
                        w.ack().version,
                        *version,
                        "ACK must echo the window version"
                    );
                    prop_assert_eq!(
                        w.ack().seq,
                        *seqs.last().unwrap(),
                        "ACK must be the window's last data frame's seq (frames {:?})",
                        seqs
                    );
                    open = None;
                }
            }
        }
    }
    prop_assert!(
        done.next().is_none(),
        "a window completed early, without its frames"
    );
    Ok(())
}

/// Every frame a prefix of a stream yields before it needs more bytes, or the error it
/// gives (it must give none).
fn decode_prefix(prefix: &[u8]) -> Result<Vec<Frame>, DecodeError> {
    let mut session = Session::new(Limits::default());
    session.buffer().extend_from_slice(prefix);
    let mut got = Vec::new();
    while let Some(step) = session.next()? {
        match step {
            Step::Window { version, count } => got.push(Frame::Window { version, count }),
            Step::Event { frame, .. } => got.push(Frame::Data(frame)),
            Step::End { .. } => unreachable!("the stream has not ended"),
        }
    }
    Ok(got)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_chunking_of_encoded_windows_decodes_to_the_same_frames(
        (windows, continuous) in stream(4, 12, 300),
        cuts in prop::collection::vec(any::<u16>(), 0..40),
    ) {
        let (bytes, expected, _) = encode(&windows, continuous);
        let t = Transcript::replay(Limits::default(), split(&bytes, &cuts));
        prop_assert!(t.error.is_none(), "error {:?}", t.error);
        prop_assert_eq!(t.frames, expected);
    }

    #[test]
    fn any_chunking_of_a_stream_gives_the_same_acks(
        (windows, continuous) in stream(5, 10, 100),
        cuts in prop::collection::vec(any::<u16>(), 0..40),
    ) {
        let (bytes, _, last_seqs) = encode(&windows, continuous);
        let t = Transcript::replay(Limits::default(), split(&bytes, &cuts));
        prop_assert!(t.error.is_none(), "error {:?}", t.error);
        check_windows(&t)?;
        let acks: Vec<u32> = t.windows.iter().map(|w| w.ack().seq).collect();
        prop_assert_eq!(acks, last_seqs);
    }

    #[test]
    fn every_strict_prefix_of_an_uncompressed_stream_needs_more_bytes(
        (mut windows, continuous) in stream(3, 5, 40),
    ) {
        for w in &mut windows {
            w.level = 0;
        }
        let (bytes, expected, _) = encode(&windows, continuous);
        // Where each frame ends: a prefix yields exactly the frames that end inside it.
        let mut ends = Vec::new();
        let mut at = 0;
        for f in &expected {
            at += match f {
                Frame::Window { .. } => 6,
                Frame::Data(DataFrame { payload: Payload::Json(payload), .. }) => 10 + payload.len(),
                Frame::Data(_) => unreachable!("the encoder writes J frames"),
            };
            ends.push(at);
        }
        for len in 0..bytes.len() {
            let got = decode_prefix(&bytes[..len])
                .map_err(|e| TestCaseError::fail(format!("prefix of {len} bytes: {e}")))?;
            let complete = ends.iter().filter(|e| **e <= len).count();
            prop_assert_eq!(&got[..], &expected[..complete], "prefix of {} bytes", len);
        }
    }

    #[test]
    fn every_strict_prefix_of_a_compressed_stream_yields_frames_or_needs_more_bytes(
        (mut windows, continuous) in stream(3, 5, 40),
        level in 1u32..=9,
    ) {
        for w in &mut windows {
            w.level = level;
        }
        let (bytes, expected, _) = encode(&windows, continuous);
        for len in 0..bytes.len() {
            let got = decode_prefix(&bytes[..len])
                .map_err(|e| TestCaseError::fail(format!("prefix of {len} bytes: {e}")))?;
            // All frames may come out before the zlib trailer (Adler-32) has arrived.
            prop_assert_eq!(&got[..], &expected[..got.len()], "prefix of {} bytes", len);
        }
    }

    #[test]
    fn an_ack_never_passes_its_window(
        frames in prop::collection::vec(
            prop_oneof![
                (0u32..6).prop_map(|count| Frame::Window { version: b'2', count }),
                (0u32..6).prop_map(|count| Frame::Window { version: b'1', count }),
                any::<u32>().prop_map(|seq| json(b'2', seq, Bytes::new())),
                (0u32..20).prop_map(|seq| Frame::Data(DataFrame {
                    version: b'1',
                    seq,
                    payload: Payload::Pairs(vec![]),
                })),
            ],
            0..60,
        ),
    ) {
        let mut wire = BytesMut::new();
        for f in &frames {
            encode_frame(f, &mut wire);
        }
        let limits = Limits { max_window_events: 4, ..Limits::default() };
        let t = Transcript::replay(limits, [&wire[..]]);
        check_windows(&t)?;
        // Frames are accepted in order up to the first one the window rules refuse.
        prop_assert_eq!(&t.frames[..], &frames[..t.frames.len()]);
    }

    #[test]
    fn random_bytes_never_panic(
        prefix in prop_oneof![
            Just(Vec::new()),
            Just(b"2W\0\0\0\x02".to_vec()),
            Just(b"2W\0\0\0\x01".iter().chain(b"2J\0\0\0\x01").copied().collect()),
            Just(b"2W\0\0\0\x01".iter().chain(b"2C\0\0\0\x40\x78\x9c").copied().collect()),
            Just(b"1W\0\0\0\x01".iter().chain(b"1D\0\0\0\x01").copied().collect()),
        ],
        noise in prop::collection::vec(any::<u8>(), 0..512),
        cuts in prop::collection::vec(any::<u16>(), 0..20),
    ) {
        let bytes: Vec<u8> = prefix.into_iter().chain(noise).collect();
        let limits = Limits { max_frame_bytes: 4096, max_inflated_bytes: 65_536, max_window_events: 8 };
        let t = Transcript::replay(limits, split(&bytes, &cuts));
        check_windows(&t)?;
    }
}
