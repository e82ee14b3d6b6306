//! Properties of the codec and the window bookkeeping over generated streams (STYLE.md
//! habits 2 and 11): any chunking decodes the same, a partial frame is "need more bytes"
//! and never an error, an ACK never passes its window, and no input panics.

use bytes::{Bytes, BytesMut};
use lumberd::protocol::{
    encode_window, Codec, CompletedWindow, Compression, DecodeError, Frame, Limits, WindowTracker,
};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

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
            frames.push(Frame::Json {
                version: b'2',
                seq: first + i as u32,
                payload: Bytes::copy_from_slice(p),
            });
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

/// Decodes `chunks` in order, then end of stream; frames until the first error.
fn decode_all(chunks: &[&[u8]], limits: Limits) -> (Vec<Frame>, Option<DecodeError>) {
    let mut codec = Codec::new(limits);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

/// Feeds frames to a tracker and checks every completed window against the frames it
/// received: its count, and an ACK equal to its own last data frame's seq.
fn track(frames: &[Frame], max_window_events: u32) -> Result<Vec<CompletedWindow>, TestCaseError> {
    let mut tracker = WindowTracker::new(max_window_events);
    let mut done = Vec::new();
    let mut open: Option<(u8, u32, Vec<u32>)> = None;
    for f in frames {
        let result = tracker.on_frame(f);
        match f {
            Frame::Window { version, count } => {
                if result.is_ok() {
                    open = Some((*version, *count, Vec::new()));
                }
            }
            Frame::Json { seq, .. } | Frame::Data { seq, .. } => {
                if let Some((_, _, seqs)) = open.as_mut() {
                    seqs.push(*seq);
                }
            }
        }
        match result {
            Err(_) => break,
            Ok(None) => {}
            Ok(Some(w)) => {
                let (version, count, seqs) =
                    open.take().expect("a window completed while none was open");
                prop_assert_eq!(seqs.len() as u32, count, "window completed early or late");
                prop_assert_eq!(w.count, count);
                prop_assert_eq!(w.ack().version, version, "ACK must echo the window version");
                prop_assert_eq!(
                    w.ack().seq,
                    *seqs.last().unwrap(),
                    "ACK must be the window's last data frame's seq (frames {:?})",
                    seqs
                );
                done.push(w);
            }
        }
    }
    Ok(done)
}

/// Every frame a prefix of a stream yields, or the error it gives (it must give none).
fn decode_prefix(prefix: &[u8]) -> Result<Vec<Frame>, DecodeError> {
    let mut codec = Codec::new(Limits::default());
    let mut buf = BytesMut::from(prefix);
    let mut got = Vec::new();
    while let Some(f) = codec.decode(&mut buf)? {
        got.push(f);
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
        let (frames, error) = decode_all(&split(&bytes, &cuts), Limits::default());
        prop_assert!(error.is_none(), "error {:?}", error);
        prop_assert_eq!(frames, expected);
    }

    #[test]
    fn any_chunking_of_a_stream_gives_the_same_acks(
        (windows, continuous) in stream(5, 10, 100),
        cuts in prop::collection::vec(any::<u16>(), 0..40),
    ) {
        let (bytes, _, last_seqs) = encode(&windows, continuous);
        let (frames, error) = decode_all(&split(&bytes, &cuts), Limits::default());
        prop_assert!(error.is_none(), "error {:?}", error);
        let acks: Vec<u32> = track(&frames, 16_384)?.iter().map(|w| w.ack().seq).collect();
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
                Frame::Json { payload, .. } => 10 + payload.len(),
                Frame::Data { .. } => unreachable!(),
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
                any::<u32>().prop_map(|seq| Frame::Json { version: b'2', seq, payload: Bytes::new() }),
                (0u32..20).prop_map(|seq| Frame::Data { version: b'1', seq, pairs: vec![] }),
            ],
            0..60,
        ),
    ) {
        track(&frames, 4)?;
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
        let (frames, _) = decode_all(&split(&bytes, &cuts), limits);
        track(&frames, limits.max_window_events)?;
    }
}
