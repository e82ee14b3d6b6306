//! What is on disk, as the writer and the reader agree on it: the segments and their
//! durable lengths, the committed and acknowledged sequence numbers, the oldest record's
//! time, and the byte budget's debt. Pure bookkeeping under one lock; no I/O.

use std::collections::VecDeque;

use super::frame::SEGMENT_HEADER_BYTES;
use super::Position;

/// One segment file: the sequence number its name carries and how many of its bytes are
/// durable (the reader never reads past them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base: u64,
    pub len: u64,
}

impl SegmentInfo {
    /// Bytes of records (and any damage) in the file, the part the budget counts.
    pub fn record_bytes(&self) -> u64 {
        self.len.saturating_sub(SEGMENT_HEADER_BYTES as u64)
    }
}

/// How far durable data reaches: the last segment and its durable length. The reader
/// is behind while its own (segment, offset) is below this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Mark {
    pub segment: u64,
    pub len: u64,
}

#[derive(Debug, Default)]
pub struct Ledger {
    /// Oldest first; the last one is the writer's (never deleted by an ack).
    pub segments: VecDeque<SegmentInfo>,
    /// One past the last committed sequence number.
    pub durable_next: u64,
    /// One past the last acknowledged sequence number.
    pub acked_next: u64,
    /// Append time of the oldest record not acknowledged, when known.
    pub oldest_ms: Option<u64>,
    /// Bytes on disk beyond `max_bytes` (a spool reopened with a smaller limit): paid
    /// back from freed segments before the budget grows again.
    pub debt: u64,
}

impl Ledger {
    /// Records one commit: the durable lengths of the segments it wrote (new ones are
    /// added), the sequence number after it, and its first record's time.
    pub fn commit(&mut self, touched: &[SegmentInfo], durable_next: u64, first_ms: Option<u64>) {
        if self.records() == 0 && durable_next > self.durable_next {
            self.oldest_ms = first_ms;
        }
        for t in touched {
            match self.segments.iter_mut().rev().find(|s| s.base == t.base) {
                Some(s) => s.len = t.len,
                None => self.segments.push_back(*t),
            }
        }
        self.durable_next = self.durable_next.max(durable_next);
    }

    /// Records appended and not acknowledged, from sequence numbers: an upper bound, as
    /// numbers skipped after a failed write or lost to corruption count until acked.
    pub fn records(&self) -> u64 {
        self.durable_next.saturating_sub(self.acked_next)
    }

    /// Bytes of every segment file.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    pub fn mark(&self) -> Mark {
        self.segments.back().map_or(Mark::default(), |s| Mark {
            segment: s.base,
            len: s.len,
        })
    }

    /// The segments that `through` (acknowledged, with everything before it) consumes
    /// wholly: every one before its segment, and its segment too when it ended there
    /// and is no longer written. Never the last segment.
    pub fn consumed(&self, through: &Position) -> Vec<SegmentInfo> {
        let n = self.segments.len().saturating_sub(1);
        self.segments
            .iter()
            .take(n)
            .filter(|s| {
                s.base < through.segment || (s.base == through.segment && through.end >= s.len)
            })
            .copied()
            .collect()
    }

    /// Forgets a deleted segment; returns the record bytes it held.
    pub fn remove(&mut self, base: u64) -> u64 {
        match self.segments.iter().position(|s| s.base == base) {
            Some(i) => self.segments.remove(i).map_or(0, |s| s.record_bytes()),
            None => 0,
        }
    }

    /// Of `bytes` freed, how many go back to the budget once the debt is paid.
    pub fn repay(&mut self, bytes: u64) -> u64 {
        let paid = bytes.min(self.debt);
        self.debt -= paid;
        bytes - paid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: u64, len: u64) -> SegmentInfo {
        SegmentInfo { base, len }
    }

    fn ledger(segments: &[SegmentInfo]) -> Ledger {
        Ledger {
            segments: segments.iter().copied().collect(),
            ..Ledger::default()
        }
    }

    fn at(segment: u64, end: u64) -> Position {
        Position {
            segment,
            end,
            seq: 0,
        }
    }

    #[test]
    fn an_ack_consumes_the_segments_before_its_own() {
        let l = ledger(&[seg(0, 100), seg(10, 100), seg(20, 50)]);
        assert_eq!(l.consumed(&at(10, 60)), [seg(0, 100)]);
        assert_eq!(l.consumed(&at(0, 60)), []);
    }

    #[test]
    fn an_ack_at_the_end_of_a_sealed_segment_consumes_it() {
        let l = ledger(&[seg(0, 100), seg(10, 100), seg(20, 50)]);
        assert_eq!(l.consumed(&at(10, 100)), [seg(0, 100), seg(10, 100)]);
    }

    #[test]
    fn the_segment_being_written_is_never_consumed() {
        let l = ledger(&[seg(0, 100), seg(10, 50)]);
        assert_eq!(l.consumed(&at(10, 50)), [seg(0, 100)]);
        assert_eq!(ledger(&[seg(0, 100)]).consumed(&at(0, 100)), []);
    }

    #[test]
    fn a_commit_into_an_empty_spool_sets_the_oldest_time() {
        let mut l = ledger(&[seg(0, 24)]);
        l.commit(&[seg(0, 124)], 3, Some(500));
        assert_eq!(
            (l.oldest_ms, l.records(), l.mark().len),
            (Some(500), 3, 124)
        );
        l.commit(&[seg(0, 200), seg(3, 60)], 5, Some(900));
        assert_eq!(l.oldest_ms, Some(500), "a later commit keeps the oldest");
        assert_eq!(
            l.mark(),
            Mark {
                segment: 3,
                len: 60
            }
        );
        assert_eq!(l.bytes(), 260);
    }

    #[test]
    fn freed_bytes_pay_the_debt_first() {
        let mut l = Ledger {
            debt: 150,
            ..Ledger::default()
        };
        assert_eq!(l.repay(100), 0);
        assert_eq!(l.repay(100), 50);
        assert_eq!(l.repay(10), 10);
    }
}
