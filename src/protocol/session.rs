//! The protocol's one driver: the decoder and the window bookkeeping behind a single
//! `next()`, fed bytes by whoever owns the socket (or the test). Pure: no I/O, no clock.
//!
//! The connection, the fixture replay, the fuzz target and the property tests all read a
//! stream through a [`Session`], so what the tests check is what ships.

use bytes::BytesMut;

use super::decoder::Codec;
use super::window::WindowTracker;
use super::{CompletedWindow, DataFrame, DecodeError, Frame, Limits};

/// What the next bytes of a stream amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A `W` frame: a window of `count` data frames begins (docs/PROTOCOL.md rule 2).
    Window { version: u8, count: u32 },
    /// One event. `completes` is the window it is the last data frame of, and so the
    /// ACK that window earns once delivered (docs/PROTOCOL.md rule 3).
    Event {
        frame: DataFrame,
        completes: Option<CompletedWindow>,
    },
    /// The stream ended cleanly, between windows. `probe`: it ended without a single
    /// byte (a load balancer's health check, docs/PROTOCOL.md rule 7).
    End { probe: bool },
}

/// One client stream, from bytes to [`Step`]s: frames are decoded (checking every limit
/// before buffering, docs/PROTOCOL.md rule 6) and checked against the window they belong
/// to (rule 2).
///
/// Put what the socket read into [`Session::buffer`], say [`Session::end_of_stream`]
/// when it reads 0, and call [`Session::next`] until it returns `Ok(None)` (more bytes
/// needed) or [`Step::End`]. An `Err` is final: a byte stream cannot be resynchronised
/// (docs/PROTOCOL.md rule 5), so the connection ends and nothing after it is read.
#[derive(Debug)]
pub struct Session {
    codec: Codec,
    windows: WindowTracker,
    buf: BytesMut,
    eof: bool,
}

impl Session {
    pub fn new(limits: Limits) -> Session {
        Session {
            codec: Codec::new(limits),
            windows: WindowTracker::new(limits.max_window_events),
            // Allocated at the first read: health-check connects cost no buffer.
            buf: BytesMut::new(),
            eof: false,
        }
    }

    /// Where bytes read from the stream go, in order.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// No more bytes will come: a partial frame or window left is then an error.
    pub fn end_of_stream(&mut self) {
        self.eof = true;
    }

    /// The next step, or `Ok(None)` when the buffered bytes end inside a frame and more
    /// are needed ("need more bytes" is not an error).
    #[allow(clippy::should_implement_trait)] // not an iterator: it can need more bytes
    pub fn next(&mut self) -> Result<Option<Step>, DecodeError> {
        let decoded = if self.eof {
            self.codec.decode_eof(&mut self.buf)?
        } else {
            self.codec.decode(&mut self.buf)?
        };
        let Some(frame) = decoded else {
            if !self.eof {
                // Between windows with nothing buffered: an idle connection keeps no
                // buffer (the next read allocates one).
                if self.buf.is_empty() && !self.windows.is_open() && self.buf.capacity() > 0 {
                    self.buf = BytesMut::new();
                }
                return Ok(None);
            }
            if self.codec.offset() == 0 {
                return Ok(Some(Step::End { probe: true }));
            }
            self.windows.finish().map_err(|error| self.error(error))?;
            return Ok(Some(Step::End { probe: false }));
        };
        let completes = self
            .windows
            .on_frame(&frame)
            .map_err(|error| self.error(error))?;
        Ok(Some(match frame {
            Frame::Window { version, count } => Step::Window { version, count },
            Frame::Data(frame) => Step::Event { frame, completes },
        }))
    }

    /// True while a window has been announced and not all of its data frames have come.
    pub fn in_window(&self) -> bool {
        self.windows.is_open()
    }

    /// Bytes the buffer must hold at once to finish the frame it ends in, when that
    /// frame's header announces more than is buffered (a large `J` payload); 0 otherwise.
    /// Lets the caller reserve memory before reading them.
    pub fn buffer_demand(&self) -> usize {
        self.codec.buffer_demand(&self.buf)
    }

    /// Makes room for the [`Session::buffer_demand`] frame in one allocation: call it
    /// once that memory is reserved (the decoder does not grow a buffer on the word of a
    /// large frame's header).
    pub fn make_room(&mut self) {
        self.codec.make_room(&mut self.buf);
    }

    /// Wire bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.codec.offset()
    }

    /// `C` frames met so far (their inner frames come out as frames of their own).
    pub fn compressed_frames(&self) -> u64 {
        self.codec.compressed_frames()
    }

    /// Bytes inflated so far, over every `C` frame.
    pub fn inflated_bytes(&self) -> u64 {
        self.codec.inflated_bytes()
    }

    fn error(&self, error: super::ProtocolError) -> DecodeError {
        DecodeError {
            offset: self.codec.offset(),
            error,
        }
    }
}

/// Everything a session made of one whole stream: for replaying recorded or generated
/// streams (fixtures, fuzzing, properties) exactly as a connection decodes them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Transcript {
    /// Every frame accepted, in order; a frame refused by the window rules is not here.
    pub frames: Vec<Frame>,
    /// Every window completed, in order: the ACKs a connection would send.
    pub windows: Vec<CompletedWindow>,
    /// `Some(probe)` when the stream ended cleanly.
    pub end: Option<bool>,
    /// The error that ended the stream.
    pub error: Option<DecodeError>,
}

impl Transcript {
    /// Feeds `reads` to a fresh session one after another, as socket reads, then ends the
    /// stream; stops at the first error.
    pub fn replay<'a>(limits: Limits, reads: impl IntoIterator<Item = &'a [u8]>) -> Transcript {
        let mut session = Session::new(limits);
        let mut out = Transcript::default();
        for read in reads {
            session.buffer().extend_from_slice(read);
            if !out.record(&mut session) {
                return out;
            }
        }
        session.end_of_stream();
        out.record(&mut session);
        out
    }

    /// Takes every step the buffered bytes give; false once the stream has ended.
    fn record(&mut self, session: &mut Session) -> bool {
        loop {
            match session.next() {
                Ok(None) => return true,
                Ok(Some(Step::Window { version, count })) => {
                    self.frames.push(Frame::Window { version, count })
                }
                Ok(Some(Step::Event { frame, completes })) => {
                    self.frames.push(Frame::Data(frame));
                    self.windows.extend(completes);
                }
                Ok(Some(Step::End { probe })) => {
                    self.end = Some(probe);
                    return false;
                }
                Err(e) => {
                    self.error = Some(e);
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{encode_window, Compression, Payload, ProtocolError, LARGE_FRAME_BYTES};

    fn wire(windows: &[&[&str]], compression: Compression) -> Vec<u8> {
        let mut out = BytesMut::new();
        for w in windows {
            encode_window(1, w, compression, &mut out);
        }
        out.to_vec()
    }

    #[test]
    fn steps_open_a_window_then_yield_its_events_the_last_completing_it() {
        let bytes = wire(&[&["{\"a\":1}", "{\"a\":2}"]], Compression::Level(3));
        let mut s = Session::new(Limits::default());
        s.buffer().extend_from_slice(&bytes);
        assert_eq!(
            s.next(),
            Ok(Some(Step::Window {
                version: b'2',
                count: 2
            }))
        );
        assert!(s.in_window());
        let Ok(Some(Step::Event { frame, completes })) = s.next() else {
            panic!("the first event");
        };
        assert_eq!(
            (frame.seq, &frame.payload, completes),
            (1, &Payload::Json("{\"a\":1}".into()), None)
        );
        let Ok(Some(Step::Event { completes, .. })) = s.next() else {
            panic!("the second event");
        };
        let done = completes.expect("the second of two events completes the window");
        assert_eq!((done.count, done.ack().seq), (2, 2));
        assert!(!s.in_window());
        assert_eq!(s.next(), Ok(None), "no more bytes buffered: need more");
        s.end_of_stream();
        assert_eq!(s.next(), Ok(Some(Step::End { probe: false })));
        assert_eq!(s.compressed_frames(), 1);
        assert!(s.inflated_bytes() > 0);
        assert_eq!(s.offset(), bytes.len() as u64);
    }

    #[test]
    fn a_stream_without_a_byte_ends_as_a_probe() {
        let t = Transcript::replay(Limits::default(), []);
        assert_eq!((t.end, t.error), (Some(true), None));
        let t = Transcript::replay(
            Limits::default(),
            [&wire(&[&["{}"]], Compression::None)[..]],
        );
        assert_eq!(
            (t.end, t.windows.len()),
            (Some(false), 1),
            "a stream with a complete window ends cleanly, not as a probe"
        );
    }

    #[test]
    fn window_errors_carry_the_wire_offset_and_end_the_stream() {
        let mut bytes = wire(&[&["{}", "{}"]], Compression::None);
        bytes.truncate(6 + 12); // W 2 and one J of the two
        bytes.extend_from_slice(b"2W\0\0\0\x01");
        let t = Transcript::replay(Limits::default(), [&bytes[..]]);
        let e = t.error.expect("a W before the window is complete");
        assert_eq!(
            e.error,
            ProtocolError::PrematureWindow {
                expected: 2,
                received: 1
            }
        );
        assert_eq!(e.offset, bytes.len() as u64);
        assert_eq!(t.frames.len(), 2, "the refused W is not among the frames");
        assert_eq!(t.end, None);
    }

    #[test]
    fn a_stream_ending_inside_a_window_is_an_error_not_an_end() {
        let bytes = wire(&[&["{}", "{}"]], Compression::None);
        let t = Transcript::replay(Limits::default(), [&bytes[..6 + 12]]);
        assert_eq!(
            t.error.map(|e| e.error),
            Some(ProtocolError::TruncatedWindow {
                expected: 2,
                received: 1
            })
        );
        assert_eq!(t.end, None);
    }

    #[test]
    fn between_windows_an_empty_buffer_is_released_and_a_large_payload_takes_its_memory_along() {
        let big = "x".repeat(LARGE_FRAME_BYTES * 4);
        let mut bytes = wire(&[&[big.as_str()]], Compression::None);
        bytes.extend_from_slice(&wire(&[&["{}"]], Compression::None)[..3]);
        let mut s = Session::new(Limits::default());
        s.buffer().extend_from_slice(&bytes);
        assert!(matches!(s.next(), Ok(Some(Step::Window { .. }))));
        let Ok(Some(Step::Event { frame, .. })) = s.next() else {
            panic!("the large event");
        };
        assert!(
            s.buffer().capacity() < LARGE_FRAME_BYTES,
            "the buffer goes on without the large frame's allocation (capacity {})",
            s.buffer().capacity()
        );
        assert_eq!(
            s.buffer().len(),
            3,
            "the next window's first bytes stay buffered"
        );
        drop(frame);
        s.buffer().clear();
        assert_eq!(s.next(), Ok(None));
        assert_eq!(
            s.buffer().capacity(),
            0,
            "an empty buffer between windows is released"
        );
    }

    #[test]
    fn mid_window_the_buffer_is_kept_and_small_payloads_do_not_share_it() {
        let bytes = wire(&[&["{\"a\":1}", "{\"a\":2}"]], Compression::None);
        let mut s = Session::new(Limits::default());
        s.buffer().reserve(4096);
        s.buffer().extend_from_slice(&bytes[..6 + 10 + 7]);
        assert!(matches!(s.next(), Ok(Some(Step::Window { .. }))));
        let Ok(Some(Step::Event { frame, .. })) = s.next() else {
            panic!("the first event");
        };
        assert_eq!(s.next(), Ok(None), "the window is open: more to come");
        let capacity = s.buffer().capacity();
        assert!(capacity >= 4096 - 6 - 17, "the buffer is kept mid-window");
        let Payload::Json(payload) = frame.payload else {
            panic!("a J frame")
        };
        assert!(
            !s.buffer().as_ptr_range().contains(&payload.as_ptr()),
            "a small payload is a copy, not a view pinning the read buffer"
        );
    }

    #[test]
    fn a_large_frame_announces_what_it_needs_before_its_bytes_arrive() {
        let big = "x".repeat(100_000);
        let bytes = wire(&[&[big.as_str()]], Compression::None);
        let mut s = Session::new(Limits::default());
        s.buffer().extend_from_slice(&bytes[..6 + 10 + 5]);
        assert!(matches!(s.next(), Ok(Some(Step::Window { .. }))));
        assert_eq!(s.next(), Ok(None));
        assert_eq!(s.buffer_demand(), 10 + big.len());
    }
}
