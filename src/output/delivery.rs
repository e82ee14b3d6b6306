//! A window's delivery: resolved once every batch of the window is durable, or failed
//! as soon as one of them is dropped without being delivered.
//!
//! Each batch carries its own handle; the connection keeps one until the window's last
//! batch is queued. A handle dropped without `delivered()` (an output error, a panic, a
//! shutdown) fails the window, so a lost batch can never be acknowledged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Why a window was not delivered; its connection closes without an ACK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryFailed {
    /// A batch was dropped before the output reported it (an output that ended or
    /// panicked, a drain that gave up on it).
    #[error("output did not deliver the window: a batch was dropped undelivered")]
    Dropped,
    /// The output went away without answering for the window.
    #[error("output did not deliver the window: output stopped")]
    OutputStopped,
    /// The file output could not write or fsync the batch.
    #[error("output did not deliver the window: file output: {0}")]
    File(String),
    /// Rejected events could not be stored in `output.dead_letter_file`.
    #[error("output did not deliver the window: dead letter file {path}: {reason}")]
    DeadLetterFile { path: String, reason: String },
    /// The spool could not take the batch for good (a record larger than a segment,
    /// a writer that stopped); write errors are retried, never reported here.
    #[error("output did not deliver the window: spool: {0}")]
    Spool(String),
    /// Elasticsearch refused the dead letters of rejected events too.
    #[error("output did not deliver the window: dead letter refused: {reason}")]
    DeadLetterRefused { status: u16, reason: String },
}

pub type DeliveryReceiver = oneshot::Receiver<Result<(), DeliveryFailed>>;

#[derive(Debug)]
struct Shared {
    failed: AtomicBool,
    reason: Mutex<Option<DeliveryFailed>>,
    tx: Mutex<Option<oneshot::Sender<Result<(), DeliveryFailed>>>>,
}

impl Drop for Shared {
    // Runs when the last handle is gone: every batch has reported.
    fn drop(&mut self) {
        let result = if self.failed.load(Ordering::Acquire) {
            let reason = self.reason.lock().ok().and_then(|mut r| r.take());
            Err(reason.unwrap_or(DeliveryFailed::Dropped))
        } else {
            Ok(())
        };
        if let Some(tx) = self.tx.lock().ok().and_then(|mut t| t.take()) {
            let _ = tx.send(result);
        }
    }
}

#[derive(Debug)]
pub struct Delivery {
    shared: Arc<Shared>,
    done: bool,
}

impl Delivery {
    pub fn new() -> (Delivery, DeliveryReceiver) {
        let (tx, rx) = oneshot::channel();
        let shared = Shared {
            failed: AtomicBool::new(false),
            reason: Mutex::new(None),
            tx: Mutex::new(Some(tx)),
        };
        (
            Delivery {
                shared: Arc::new(shared),
                done: false,
            },
            rx,
        )
    }

    /// Another handle on the same window, for one more batch.
    pub fn share(&self) -> Delivery {
        Delivery {
            shared: self.shared.clone(),
            done: false,
        }
    }

    /// This handle's part of the window is durable.
    pub fn delivered(mut self) {
        self.done = true;
    }

    /// This handle's part of the window cannot be delivered; the first reason given
    /// for a window is the one its connection reports.
    pub fn fail(mut self, reason: &DeliveryFailed) {
        if let Ok(mut r) = self.shared.reason.lock() {
            r.get_or_insert_with(|| reason.clone());
        }
        self.shared.failed.store(true, Ordering::Release);
        self.done = true;
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if !self.done {
            self.shared.failed.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_delivered_only_after_every_handle_reports() {
        let (d, mut rx) = Delivery::new();
        let a = d.share();
        let b = d.share();
        d.delivered();
        a.delivered();
        assert!(rx.try_recv().is_err(), "one batch is still outstanding");
        b.delivered();
        assert_eq!(rx.try_recv().unwrap(), Ok(()));
    }

    #[test]
    fn a_handle_dropped_undelivered_fails_the_window() {
        let (d, mut rx) = Delivery::new();
        let a = d.share();
        d.delivered();
        drop(a);
        assert_eq!(rx.try_recv().unwrap(), Err(DeliveryFailed::Dropped));
    }

    #[test]
    fn failure_reason_reaches_the_receiver() {
        let (d, mut rx) = Delivery::new();
        let a = d.share();
        a.fail(&DeliveryFailed::File("disk full".into()));
        d.delivered();
        assert_eq!(
            rx.try_recv().unwrap(),
            Err(DeliveryFailed::File("disk full".into()))
        );
    }
}
