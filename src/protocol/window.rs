//! Window bookkeeping: which data frames belong to which window, and the ACK each
//! completed window earns. Pure: driven by frames, no clocks or sockets.

use super::{Ack, DataFrame, Frame, ProtocolError};

/// A window whose data frames have all arrived: what its ACK must say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedWindow {
    /// The `W` frame's version byte, echoed in the ACK (docs/PROTOCOL.md rule 3).
    pub version: u8,
    pub count: u32,
    /// Sequence number of the window's last data frame: `count` for Filebeat, the
    /// running number for continuous-sequence clients such as pylogbeat.
    pub last_seq: u32,
}

impl CompletedWindow {
    pub fn ack(&self) -> Ack {
        Ack {
            version: self.version,
            seq: self.last_seq,
        }
    }

    /// The keep-alive for this window: `ACK 0` never completes it, and resets the
    /// client's timeout (docs/PROTOCOL.md rule 4).
    pub fn keepalive(&self) -> Ack {
        Ack {
            version: self.version,
            seq: 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Open {
    version: u8,
    expected: u32,
    received: u32,
    last_seq: u32,
}

/// Enforces exact windows (docs/PROTOCOL.md rule 2) and says when one is complete. The only
/// record of whether a window is open; [`super::Session`] feeds it every frame.
#[derive(Debug)]
pub(super) struct WindowTracker {
    max_window_events: u32,
    open: Option<Open>,
}

impl WindowTracker {
    pub(super) fn new(max_window_events: u32) -> Self {
        WindowTracker {
            max_window_events,
            open: None,
        }
    }

    /// Feeds one decoded frame; returns the window it completes, if any.
    pub(super) fn on_frame(
        &mut self,
        frame: &Frame,
    ) -> Result<Option<CompletedWindow>, ProtocolError> {
        match *frame {
            Frame::Window { version, count } => {
                if let Some(open) = self.open {
                    return Err(ProtocolError::PrematureWindow {
                        expected: open.expected,
                        received: open.received,
                    });
                }
                if count == 0 {
                    return Err(ProtocolError::EmptyWindow);
                }
                if count > self.max_window_events {
                    return Err(ProtocolError::WindowTooLarge {
                        count,
                        limit: self.max_window_events,
                    });
                }
                self.open = Some(Open {
                    version,
                    expected: count,
                    received: 0,
                    last_seq: 0,
                });
                Ok(None)
            }
            Frame::Data(DataFrame { seq, .. }) => {
                let open = self
                    .open
                    .as_mut()
                    .ok_or(ProtocolError::DataOutsideWindow(seq))?;
                open.received += 1;
                open.last_seq = seq;
                if open.received < open.expected {
                    return Ok(None);
                }
                let done = CompletedWindow {
                    version: open.version,
                    count: open.expected,
                    last_seq: open.last_seq,
                };
                self.open = None;
                Ok(Some(done))
            }
        }
    }

    /// True while a window has been announced and not all of its frames have arrived.
    pub(super) fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// At end of stream: an unfinished window is an error (the client must resend it).
    pub(super) fn finish(&self) -> Result<(), ProtocolError> {
        match self.open {
            Some(open) => Err(ProtocolError::TruncatedWindow {
                expected: open.expected,
                received: open.received,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Payload;
    use super::*;
    use bytes::Bytes;

    fn json(seq: u32) -> Frame {
        Frame::Data(DataFrame {
            version: b'2',
            seq,
            payload: Payload::Json(Bytes::from_static(b"{}")),
        })
    }

    #[test]
    fn window_completes_on_its_last_frame_with_last_sequence_number() {
        let mut t = WindowTracker::new(10);
        assert_eq!(
            t.on_frame(&Frame::Window {
                version: b'2',
                count: 2
            }),
            Ok(None)
        );
        assert_eq!(t.on_frame(&json(1)), Ok(None));
        let done = t
            .on_frame(&json(2))
            .unwrap()
            .expect("window of 2 completes at frame 2");
        assert_eq!(
            done.ack(),
            Ack {
                version: b'2',
                seq: 2
            }
        );
        assert!(!t.is_open());
    }

    #[test]
    fn continuous_sequence_clients_are_acked_with_their_running_number() {
        let mut t = WindowTracker::new(10);
        t.on_frame(&Frame::Window {
            version: b'2',
            count: 1,
        })
        .unwrap();
        t.on_frame(&json(1)).unwrap();
        t.on_frame(&Frame::Window {
            version: b'2',
            count: 2,
        })
        .unwrap();
        t.on_frame(&json(2)).unwrap();
        let done = t.on_frame(&json(3)).unwrap().unwrap();
        assert_eq!(
            done.last_seq, 3,
            "ACK must carry the last frame's seq, not the count"
        );
    }

    #[test]
    fn ack_echoes_the_window_version_byte() {
        let mut t = WindowTracker::new(10);
        t.on_frame(&Frame::Window {
            version: b'1',
            count: 1,
        })
        .unwrap();
        let done = t
            .on_frame(&Frame::Data(DataFrame {
                version: b'1',
                seq: 7,
                payload: Payload::Pairs(vec![]),
            }))
            .unwrap()
            .unwrap();
        assert_eq!(
            done.ack(),
            Ack {
                version: b'1',
                seq: 7
            }
        );
        assert_eq!(
            done.keepalive(),
            Ack {
                version: b'1',
                seq: 0
            }
        );
    }

    #[test]
    fn window_before_the_previous_one_is_complete_is_an_error() {
        let mut t = WindowTracker::new(10);
        t.on_frame(&Frame::Window {
            version: b'2',
            count: 3,
        })
        .unwrap();
        t.on_frame(&json(1)).unwrap();
        assert_eq!(
            t.on_frame(&Frame::Window {
                version: b'2',
                count: 3
            }),
            Err(ProtocolError::PrematureWindow {
                expected: 3,
                received: 1
            })
        );
    }

    #[test]
    fn data_outside_a_window_empty_and_oversized_windows_are_errors() {
        let mut t = WindowTracker::new(10);
        assert_eq!(
            t.on_frame(&json(1)),
            Err(ProtocolError::DataOutsideWindow(1))
        );
        assert_eq!(
            t.on_frame(&Frame::Window {
                version: b'2',
                count: 0
            }),
            Err(ProtocolError::EmptyWindow)
        );
        assert_eq!(
            t.on_frame(&Frame::Window {
                version: b'2',
                count: 11
            }),
            Err(ProtocolError::WindowTooLarge {
                count: 11,
                limit: 10
            })
        );
    }

    #[test]
    fn stream_ending_inside_a_window_is_an_error() {
        let mut t = WindowTracker::new(10);
        assert_eq!(t.finish(), Ok(()));
        t.on_frame(&Frame::Window {
            version: b'2',
            count: 2,
        })
        .unwrap();
        t.on_frame(&json(1)).unwrap();
        assert_eq!(
            t.finish(),
            Err(ProtocolError::TruncatedWindow {
                expected: 2,
                received: 1
            })
        );
    }
}
