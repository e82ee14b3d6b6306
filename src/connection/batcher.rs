//! The records of the window being received, gathered into batches for the output: a
//! batch leaves at `batch_events` records, before the reader waits for budget, and at the
//! window's last event. Plain data: no socket, no queue, no clock.
//!
//! It does not know whether a window is open (the protocol session does); it only knows
//! the records it holds and the delivery handle their window's batches share.

use tokio::sync::OwnedSemaphorePermit;

use crate::output::{Batch, Delivery, DeliveryReceiver};
use crate::record::Record;

/// Slots a batch starts with (at its first record): enough for small windows without
/// reserving `batch_events` for every connection.
const INITIAL_BATCH_SLOTS: usize = 64;

pub(super) struct WindowBatcher {
    batch_events: usize,
    records: Vec<Record>,
    /// The in-flight budget the records hold, released when the output takes them.
    budget: Option<OwnedSemaphorePermit>,
    /// The window's delivery: made with its first batch, shared by every batch of it.
    delivery: Option<(Delivery, DeliveryReceiver)>,
}

/// A window whose every batch is queued: the receiver resolves once all are durable.
pub(super) struct LastBatch {
    pub batch: Batch,
    pub delivered: DeliveryReceiver,
}

impl WindowBatcher {
    pub fn new(batch_events: usize) -> WindowBatcher {
        WindowBatcher {
            batch_events,
            records: Vec::new(),
            budget: None,
            delivery: None,
        }
    }

    /// Adds one event's record and the budget it holds.
    pub fn push(&mut self, record: Record, budget: OwnedSemaphorePermit) {
        self.hold(budget);
        if self.records.capacity() == 0 {
            self.records
                .reserve_exact(self.batch_events.min(INITIAL_BATCH_SLOTS));
        }
        self.records.push(record);
    }

    /// Budget held with the window's next batch without a record of its own: what a
    /// record that outgrew its reservation still owed.
    pub fn hold(&mut self, budget: OwnedSemaphorePermit) {
        match &mut self.budget {
            Some(held) => held.merge(budget),
            None => self.budget = Some(budget),
        }
    }

    /// A batch to queue now, once `batch_events` records are gathered.
    pub fn full(&mut self) -> Option<Batch> {
        (self.records.len() >= self.batch_events).then(|| self.batch())
    }

    /// The records gathered so far, to queue before waiting for budget: budget held in
    /// unqueued batches while every connection waits for more would deadlock (many
    /// connections each holding part of a window). `None` when there are none.
    pub fn partial(&mut self) -> Option<Batch> {
        (!self.records.is_empty()).then(|| self.batch())
    }

    /// The window's last event has been pushed (or dropped by a filter): its last batch,
    /// possibly empty, and the receiver its ACK waits on. The next window starts afresh.
    pub fn finish(&mut self) -> LastBatch {
        let (delivery, delivered) = self.delivery.take().unwrap_or_else(Delivery::new);
        let batch = self.batch_for(delivery.share());
        // Every batch of the window holds its own handle: this one has nothing to wait for.
        delivery.delivered();
        LastBatch { batch, delivered }
    }

    fn batch(&mut self) -> Batch {
        let (delivery, _) = self.delivery.get_or_insert_with(Delivery::new);
        let handle = delivery.share();
        self.batch_for(handle)
    }

    fn batch_for(&mut self, delivery: Delivery) -> Batch {
        Batch {
            // The next batch's slots come with its first record: an idle connection
            // holds none.
            records: std::mem::take(&mut self.records),
            budget: self.budget.take(),
            delivery,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::record::{Destination, IndexName, MAX_INDEX_NAME_BYTES};

    fn record(n: usize) -> Record {
        let index = IndexName::new("qwen-logs-2025.04.05", MAX_INDEX_NAME_BYTES).unwrap();
        Record {
            dest: Destination::Index(index),
            id: None,
            doc: Bytes::from(format!("{{\"n\":{n}}}")),
        }
    }

    fn permit(budget: &Arc<Semaphore>, n: u32) -> OwnedSemaphorePermit {
        budget
            .clone()
            .try_acquire_many_owned(n)
            .expect("budget left")
    }

    #[test]
    fn a_batch_leaves_at_batch_events_holding_its_records_budget() {
        let budget = Arc::new(Semaphore::new(100));
        let mut b = WindowBatcher::new(2);
        b.push(record(1), permit(&budget, 10));
        assert!(b.full().is_none(), "1 record of 2");
        b.push(record(2), permit(&budget, 10));
        let full = b.full().expect("2 records make a batch");
        assert_eq!(full.records.len(), 2);
        assert!(
            b.full().is_none(),
            "what was handed over is not handed over twice"
        );
        assert_eq!(budget.available_permits(), 80);
        drop(full.budget);
        assert_eq!(
            budget.available_permits(),
            100,
            "the batch carries the budget of its records, and only that"
        );
    }

    #[test]
    fn a_window_is_delivered_only_once_every_one_of_its_batches_is() {
        let budget = Arc::new(Semaphore::new(100));
        let mut b = WindowBatcher::new(2);
        b.push(record(1), permit(&budget, 1));
        b.push(record(2), permit(&budget, 1));
        let first = b.full().unwrap();
        b.push(record(3), permit(&budget, 1));
        b.push(record(4), permit(&budget, 1));
        let mut last = b.finish();
        assert_eq!(
            last.batch.records.len(),
            2,
            "the window's last event takes the rest, full or not, in one batch"
        );
        first.delivery.delivered();
        assert!(
            last.delivered.try_recv().is_err(),
            "the last batch is not durable yet"
        );
        last.batch.delivery.delivered();
        assert_eq!(last.delivered.try_recv().unwrap(), Ok(()));
    }

    #[test]
    fn a_batch_lost_before_delivery_fails_its_window() {
        let budget = Arc::new(Semaphore::new(100));
        let mut b = WindowBatcher::new(10);
        b.push(record(1), permit(&budget, 1));
        let partial = b.partial().expect("one record gathered");
        let mut last = b.finish();
        drop(partial);
        last.batch.delivery.delivered();
        assert!(
            last.delivered.try_recv().unwrap().is_err(),
            "a window one of whose batches was dropped undelivered must not be acknowledged"
        );
    }

    #[test]
    fn partial_is_nothing_when_no_record_is_held() {
        let mut b = WindowBatcher::new(10);
        assert!(b.partial().is_none());
        let budget = Arc::new(Semaphore::new(100));
        b.push(record(1), permit(&budget, 1));
        assert_eq!(b.partial().map(|p| p.records.len()), Some(1));
        assert!(
            b.partial().is_none(),
            "what was handed over is not handed over twice"
        );
    }

    #[test]
    fn a_window_of_dropped_events_still_ends_with_a_batch_and_its_own_delivery() {
        let budget = Arc::new(Semaphore::new(100));
        let mut b = WindowBatcher::new(10);
        let mut all_dropped = b.finish();
        assert!(all_dropped.batch.records.is_empty());
        b.push(record(1), permit(&budget, 1));
        let next = b.finish();
        all_dropped.batch.delivery.delivered();
        assert_eq!(
            all_dropped.delivered.try_recv().unwrap(),
            Ok(()),
            "each window has its own delivery: the next window's batch does not hold it"
        );
        assert_eq!(next.batch.records.len(), 1);
    }
}
