//! The Elasticsearch bulk output's settings (the Elasticsearch keys of `[output]`), typed
//! and checked by `config`; knows no file format.

use std::path::PathBuf;
use std::time::Duration;

use crate::output::DeadLetterIndex;

#[derive(Debug, Clone)]
pub struct EsSettings {
    pub hosts: Vec<String>,
    /// `output.sniff`: how often the cluster is asked for its nodes, which then replace
    /// `hosts`; `None` when off.
    pub sniff_interval: Option<Duration>,
    pub bulk_max_events: usize,
    pub bulk_max_bytes: u64,
    pub flush_interval: Duration,
    pub max_requests_in_flight: usize,
    pub request_timeout: Duration,
    pub retry_initial_backoff: Duration,
    pub retry_max_backoff: Duration,
    pub ready_timeout: Duration,
    pub gzip: bool,
    pub auth: EsAuth,
    pub ca_file: Option<PathBuf>,
    /// Where dead letters are indexed (the same names as the file output's).
    pub dead_letters: DeadLetterIndex,
    /// When set, rejected items are appended here (bulk form, fsynced) instead of being
    /// indexed into the dead-letter indices.
    pub dead_letter_file: Option<PathBuf>,
    /// `None` when `template = false`.
    pub template: Option<TemplateSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EsAuth {
    None,
    Basic {
        username: String,
        password: String,
    },
    /// The base64 `id:key` form Elasticsearch's create-API-key answer calls `encoded`.
    ApiKey(String),
}

#[derive(Debug, Clone)]
pub struct TemplateSettings {
    pub name: String,
    pub pattern: String,
    pub priority: u32,
    pub shards: u32,
    pub replicas: u32,
    pub ilm_delete_after: Duration,
    /// The templates' `version`: a replica overwrites only a lower one (see `setup`).
    pub version: u32,
}
