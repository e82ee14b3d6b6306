//! Outputs: where records go, and the delivery signal a window's ACK waits for.
//! Knows nothing of Lumberjack, sockets or the receive side.

pub mod bulk_file;
mod delivery;
pub mod elasticsearch;
pub mod file;
pub mod spooled;

pub use delivery::{Delivery, DeliveryFailed, DeliveryReceiver};

use std::sync::Arc;

use chrono::NaiveDate;
use tokio::sync::OwnedSemaphorePermit;

use crate::record::{Destination, DocId, IndexName, InvalidIndexName, Record};

/// The dead-letter indices of both outputs, `<prefix>YYYY.MM.dd`
/// (`output.dead_letter_prefix`, `qwen-logs-deadletter-` by default): one naming scheme
/// for a payload that is not an event, an event routed to an invalid index, and an event
/// Elasticsearch refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterIndex {
    prefix: Arc<str>,
}

impl DeadLetterIndex {
    /// `prefix` when every day's name it makes is a valid index name of at most
    /// `max_bytes`.
    pub fn new(prefix: &str, max_bytes: usize) -> Result<DeadLetterIndex, InvalidIndexName> {
        IndexName::check(&format!("{prefix}2026.12.01"), max_bytes)?;
        Ok(DeadLetterIndex {
            prefix: prefix.into(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The index of `day`'s dead letters.
    pub fn of_day(&self, day: NaiveDate) -> IndexName {
        let name = format!("{}{}", self.prefix, day.format("%Y.%m.%d"));
        IndexName::new(&name, usize::MAX).expect("a valid prefix and a date make a valid name")
    }

    /// Where `record` goes: its index, or its day's dead-letter index.
    pub fn resolve(&self, record: &Record) -> IndexName {
        match &record.dest {
            Destination::Index(name) => name.clone(),
            Destination::DeadLetter(d) => self.of_day(d.day),
        }
    }
}

/// Appends an Elasticsearch bulk action line, `{"create":{"_index":..,"_id":..}}` and its
/// newline; the document line follows it. `create` makes a resent event with the same id
/// a 409 (a duplicate), never a second document or an overwrite. The file output writes
/// the same lines, so its files can be replayed into Elasticsearch with
/// `curl --data-binary @file .../_bulk`.
pub fn write_create_action(index: &str, id: Option<&DocId>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"create\":{\"_index\":");
    // A valid index name (every one that reaches an output) needs no escape: copied as
    // it is, without serde_json's formatter per line.
    if index.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        serde_json::to_writer(&mut *out, index).expect("writing to a Vec");
    } else {
        out.push(b'"');
        out.extend_from_slice(index.as_bytes());
        out.push(b'"');
    }
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
