//! Outputs: where records go, and the delivery signal a window's ACK waits for.
//! Knows nothing of Lumberjack, sockets or the receive side.

mod delivery;
pub mod elasticsearch;
pub mod file;

pub use delivery::{Delivery, DeliveryFailed, DeliveryReceiver};

use tokio::sync::OwnedSemaphorePermit;

use crate::record::{DocId, Record};

/// Appends a record's Elasticsearch bulk action line,
/// `{"create":{"_index":..,"_id":..}}` and its newline; the document line follows it.
/// `create` makes a resent event with the same id a 409 (a duplicate), never a second
/// document or an overwrite. The file output writes the same lines, so its files can be
/// replayed into Elasticsearch with `curl --data-binary @file .../_bulk`.
pub fn write_bulk_action(record: &Record, out: &mut Vec<u8>) {
    write_create_action(&record.index, record.id.as_ref(), out)
}

/// [`write_bulk_action`] for an index other than the record's own (dead letters).
pub fn write_create_action(index: &str, id: Option<&DocId>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"create\":{\"_index\":");
    serde_json::to_writer(&mut *out, index).expect("writing to a Vec");
    if let Some(id) = id {
        out.extend_from_slice(b",\"_id\":\"");
        out.extend_from_slice(id.as_str().as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"}}\n");
}

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
