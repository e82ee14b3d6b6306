//! Outputs: where records go, and the delivery signal a window's ACK waits for.
//! Knows nothing of Lumberjack, sockets or the receive side.

mod delivery;
pub mod file;

pub use delivery::{Delivery, DeliveryFailed, DeliveryReceiver};

use tokio::sync::OwnedSemaphorePermit;

use crate::event::Record;

/// Records of one window (never of two), with the memory budget they hold and the
/// window's delivery handle. The output reports the batch delivered only once every
/// record in it is durable.
#[derive(Debug)]
pub struct Batch {
    pub records: Vec<Record>,
    /// Bytes of the in-flight budget held by these records; released once the output has
    /// taken them out of memory.
    pub budget: Option<OwnedSemaphorePermit>,
    pub delivery: Delivery,
}

/// The bounded queue into the output: `send().await` on a full queue is the backpressure.
pub type OutputSender = tokio::sync::mpsc::Sender<Batch>;
