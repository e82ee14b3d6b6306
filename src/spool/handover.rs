//! The caught-up fast path's bookkeeping: batches the writer has just made durable, kept
//! in memory with what the appender attached to them, for the reader to hand out instead
//! of reading them back. Pure: no I/O, one lock; the reader decides with it.
//!
//! Correctness rests on one rule: the reader takes an entry only when its first sequence
//! number is exactly the reader's next, and then moves its read cursor past the entry's
//! last record. An entry the reader has passed (read from disk, whole or in part) is
//! dropped, never handed out. So a record comes out once, by one path or the other, and
//! in order; acceptance ([`Handover::offer`]) only decides how often the fast path wins.

use std::collections::VecDeque;

use super::{Attachment, Position};

/// A batch made durable, as the appender attached it: handed to the reader instead of
/// its records read back from disk.
pub struct Handed {
    /// What the appender attached to the batch ([`super::Batch::attach`]).
    pub attachment: Attachment,
    /// The sequence number of the batch's first record, and its records.
    pub first_seq: u64,
    pub records: usize,
    /// Where its last record ends: what an ack of the whole batch saves.
    pub through: Position,
    /// When the writer committed it, milliseconds since the Unix epoch.
    pub appended_ms: u64,
    /// Bytes the batch took on disk, what it counts against the handover's bound.
    pub(super) bytes: u64,
}

impl std::fmt::Debug for Handed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handed")
            .field("first_seq", &self.first_seq)
            .field("records", &self.records)
            .field("through", &self.through)
            .finish_non_exhaustive()
    }
}

impl Handed {
    fn end_seq(&self) -> u64 {
        self.first_seq + self.records as u64
    }
}

/// Durable batches waiting for the reader, in sequence order, at most `limit` bytes.
#[derive(Debug)]
pub(super) struct Handover {
    limit: u64,
    bytes: u64,
    /// The reader's next sequence number as it last reported it (it may have moved on
    /// since: only [`Handover::offer`]'s guess depends on it).
    next: u64,
    queue: VecDeque<Handed>,
}

impl Handover {
    pub fn new(limit: u64, next: u64) -> Handover {
        Handover {
            limit,
            bytes: 0,
            next,
            queue: VecDeque::new(),
        }
    }

    /// Keeps `h` when it continues what the reader will want next (the end of the last
    /// entry, or the reader's next when there is none) and fits the bound; otherwise
    /// hands it back, to be dropped outside the lock: the reader is behind (it reads
    /// from disk until it is caught up) or the bound is reached (Elasticsearch slow).
    pub fn offer(&mut self, h: Handed) -> Result<(), Handed> {
        let expected = self.queue.back().map_or(self.next, Handed::end_seq);
        if h.first_seq != expected || self.bytes + h.bytes > self.limit {
            return Err(h);
        }
        self.bytes += h.bytes;
        self.queue.push_back(h);
        Ok(())
    }

    /// The reader's next sequence number is `next`: the entry starting exactly there,
    /// if there is one. Entries it has passed go into `stale`.
    pub fn take(&mut self, next: u64, stale: &mut Vec<Handed>) -> Option<Handed> {
        self.advanced(next, stale);
        if self.queue.front()?.first_seq != next {
            return None;
        }
        let h = self.queue.pop_front()?;
        self.bytes -= h.bytes;
        self.next = h.end_seq();
        Some(h)
    }

    /// The reader has read from disk up to `next`: entries starting before it go into
    /// `stale` (one read in part is stale too: an attachment cannot be split).
    pub fn advanced(&mut self, next: u64, stale: &mut Vec<Handed>) {
        self.next = next;
        while self.queue.front().is_some_and(|h| h.first_seq < next) {
            let h = self.queue.pop_front().expect("front exists");
            self.bytes -= h.bytes;
            stale.push(h);
        }
    }

    /// The reader went back to `next` (a rewind to its saved position): entries ahead
    /// stay, and are handed out once reading from disk reaches them.
    pub fn rewound(&mut self, next: u64) {
        self.next = next;
    }

    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn handed(first_seq: u64, records: usize, bytes: u64) -> Handed {
        Handed {
            attachment: Box::new(first_seq),
            first_seq,
            records,
            through: Position {
                segment: 0,
                end: 0,
                seq: first_seq + records as u64 - 1,
            },
            appended_ms: 0,
            bytes,
        }
    }

    #[test]
    fn a_batch_is_kept_only_when_it_continues_what_the_reader_wants_next() {
        let mut h = Handover::new(1000, 10);
        assert!(
            h.offer(handed(12, 2, 10)).is_err(),
            "the reader is behind: disk"
        );
        assert!(h.offer(handed(10, 2, 10)).is_ok());
        assert!(
            h.offer(handed(12, 3, 10)).is_ok(),
            "contiguous with the last"
        );
        assert!(h.offer(handed(16, 1, 10)).is_err(), "a gap");
        let mut stale = Vec::new();
        assert_eq!(h.take(10, &mut stale).map(|e| e.first_seq), Some(10));
        assert_eq!(h.take(12, &mut stale).map(|e| e.first_seq), Some(12));
        assert!(stale.is_empty() && h.bytes() == 0);
    }

    #[test]
    fn the_bound_refuses_what_does_not_fit_and_taking_makes_room() {
        let mut h = Handover::new(25, 0);
        assert!(h.offer(handed(0, 1, 10)).is_ok());
        assert!(h.offer(handed(1, 1, 10)).is_ok());
        assert!(h.offer(handed(2, 1, 10)).is_err(), "30 > 25");
        let mut stale = Vec::new();
        h.take(0, &mut stale).unwrap();
        assert!(h.offer(handed(2, 1, 10)).is_ok());
        let zero = &mut Handover::new(0, 0);
        assert!(zero.offer(handed(0, 1, 1)).is_err(), "0 turns it off");
    }

    #[test]
    fn an_entry_the_reader_passed_in_part_is_dropped_not_handed_out() {
        let mut h = Handover::new(1000, 0);
        h.offer(handed(0, 4, 10)).unwrap();
        h.offer(handed(4, 4, 10)).unwrap();
        let mut stale = Vec::new();
        // The reader read records 0 and 1 from disk before it looked here.
        assert!(h.take(2, &mut stale).is_none());
        assert_eq!(stale.len(), 1);
        assert_eq!(h.take(4, &mut stale).map(|e| e.first_seq), Some(4));
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// The writer commits a batch of this many records.
        Commit(usize),
        /// The reader takes from the handover, or reads up to this many durable records
        /// from disk when there is nothing to take.
        Read(usize),
        /// The reader goes back this many records (bounded by what was not acked).
        Rewind(usize),
        /// Everything read so far is acknowledged.
        Ack,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1..6usize).prop_map(Step::Commit),
            (1..9usize).prop_map(Step::Read),
            (1..6usize).prop_map(Step::Rewind),
            Just(Step::Ack),
        ]
    }

    proptest! {
        /// The reader's rule (take only the entry starting at its next; otherwise read
        /// from disk, which passes entries) hands out every durable record exactly once
        /// and in order between rewinds, whatever the interleaving and the bound.
        #[test]
        fn every_record_comes_out_once_in_order_by_one_path_or_the_other(
            steps in proptest::collection::vec(step(), 1..200),
            limit in 0..60u64,
        ) {
            let mut h = Handover::new(limit, 0);
            let (mut durable, mut next, mut acked) = (0u64, 0u64, 0u64);
            let mut out: Vec<u64> = Vec::new();
            let mut stale = Vec::new();
            for s in steps {
                match s {
                    Step::Commit(n) => {
                        let _ = h.offer(handed(durable, n, 10 * n as u64));
                        durable += n as u64;
                    }
                    Step::Read(n) => {
                        if let Some(e) = h.take(next, &mut stale) {
                            prop_assert_eq!(e.first_seq, next);
                            out.extend(e.first_seq..e.end_seq());
                            next = e.end_seq();
                        } else {
                            let to = (next + n as u64).min(durable);
                            out.extend(next..to);
                            next = to;
                            h.advanced(next, &mut stale);
                        }
                    }
                    Step::Rewind(n) => {
                        next = next.saturating_sub(n as u64).max(acked);
                        // What comes out again replaces what came out after `next`.
                        out.truncate(next as usize);
                        h.rewound(next);
                    }
                    Step::Ack => acked = next,
                }
                prop_assert!(h.bytes() <= limit);
            }
            // Drain: the reader catches up.
            while next < durable {
                match h.take(next, &mut stale) {
                    Some(e) => { out.extend(e.first_seq..e.end_seq()); next = e.end_seq(); }
                    None => { out.extend(next..durable); next = durable; h.advanced(next, &mut stale); }
                }
            }
            prop_assert_eq!(out, (0..durable).collect::<Vec<_>>());
        }
    }
}
