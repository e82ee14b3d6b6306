//! What lumberd stored through its file output: the bulk-form `.ndjson` files of its data
//! directory read back per index, and [`assert_stored_once`], the exactly-once check of
//! those files against what the clients sent. (What it stored in Elasticsearch: `es`.)

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use chrono::DateTime;
use serde_json::Value;

use super::clients::ClientRun;
use super::lumberd::Lumberd;

/// The dead letters' index prefix (`output.dead_letter_prefix`'s default).
pub const DEAD_LETTER_PREFIX: &str = "qwen-logs-deadletter-";

impl Lumberd {
    /// The output files `<prefix>YYYY.MM.dd.ndjson` in the data dir, sorted by name.
    pub fn files(&self, prefix: &str) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = fs::read_dir(self.data_dir())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| {
                        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                        name.starts_with(prefix) && name.ends_with(".ndjson")
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Every document of every `qwen-logs-*.ndjson` but the dead letters, keyed by index
    /// name (the file name without `.ndjson`, e.g. `qwen-logs-2025.04.05`).
    pub fn events_by_index(&self) -> BTreeMap<String, Vec<Value>> {
        strip_ids(self.read_index_files("qwen-logs-"))
    }

    /// Every document in every `qwen-logs-*.ndjson`, in file-name then line order.
    pub fn events(&self) -> Vec<Value> {
        self.events_by_index().into_values().flatten().collect()
    }

    /// Every stored event with the `_id` of its bulk action line, in file order.
    pub fn events_with_ids(&self) -> Vec<(Option<String>, Value)> {
        self.read_index_files("qwen-logs-")
            .into_values()
            .flatten()
            .collect()
    }

    /// Every document of every `qwen-logs-deadletter-*.ndjson` (`output.dead_letter_prefix`),
    /// keyed by file name without extension.
    pub fn deadletters_by_index(&self) -> BTreeMap<String, Vec<Value>> {
        strip_ids(self.read_index_files(DEAD_LETTER_PREFIX))
    }

    /// Every dead letter with the `_id` of its action line, in file order.
    pub fn deadletters_with_ids(&self) -> Vec<(Option<String>, Value)> {
        self.read_index_files(DEAD_LETTER_PREFIX)
            .into_values()
            .flatten()
            .collect()
    }

    /// The files hold Elasticsearch bulk lines: an action line naming the file's index
    /// (and the id), then the document.
    fn read_index_files(&self, prefix: &str) -> BTreeMap<String, Vec<(Option<String>, Value)>> {
        let mut out = BTreeMap::new();
        for path in self.files(prefix) {
            let dead_letters = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(DEAD_LETTER_PREFIX));
            if dead_letters && prefix != DEAD_LETTER_PREFIX {
                continue;
            }
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let parse = |i: usize, line: &str| -> Value {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!(
                        "{}:{}: not a JSON line ({e}): {line}\nlumberd logs:\n{}",
                        path.display(),
                        i + 1,
                        self.logs()
                    )
                })
            };
            let lines: Vec<(usize, &str)> = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .collect();
            assert!(
                lines.len().is_multiple_of(2),
                "{}: {} lines, bulk form has an action line per document",
                path.display(),
                lines.len()
            );
            let mut events = Vec::new();
            for pair in lines.chunks(2) {
                let action = parse(pair[0].0, pair[0].1);
                let create = &action["create"];
                assert_eq!(
                    create["_index"].as_str(),
                    Some(name.as_str()),
                    "{}:{}: action line must name the file's index: {action}",
                    path.display(),
                    pair[0].0 + 1
                );
                let id = create["_id"].as_str().map(str::to_owned);
                events.push((id, parse(pair[1].0, pair[1].1)));
            }
            out.insert(name, events);
        }
        out
    }
}

fn strip_ids(
    by_index: BTreeMap<String, Vec<(Option<String>, Value)>>,
) -> BTreeMap<String, Vec<Value>> {
    by_index
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().map(|(_, doc)| doc).collect()))
        .collect()
}

/// Where an event is expected to be stored.
#[derive(Clone, Copy)]
pub enum IndexRule {
    /// `qwen-logs-<UTC date of the event's @timestamp>` (events with an @timestamp).
    EventTimestamp,
    /// Events without @timestamp (v1 string pairs): the UTC date lumberd received them,
    /// i.e. one of the dates seen between `from` and `to` (seconds since the epoch).
    ReceivedBetween(u64, u64),
}

/// Seconds since the Unix epoch, for [`IndexRule::ReceivedBetween`].
pub fn now_secs() -> u64 {
    chrono::Utc::now()
        .timestamp()
        .try_into()
        .expect("the clock is after 1970")
}

/// `YYYY.MM.dd` of a Unix time (UTC): the date part of lumberd's daily index names.
pub fn utc_date(secs: u64) -> String {
    let secs = i64::try_from(secs).expect("a Unix time in range");
    DateTime::from_timestamp(secs, 0)
        .expect("a Unix time chrono can represent")
        .format("%Y.%m.%d")
        .to_string()
}

/// `qwen-logs-YYYY.MM.dd` for an RFC 3339 UTC timestamp such as `2025-04-05T10:23:45.000Z`.
pub fn index_of_timestamp(ts: &str) -> String {
    assert!(
        ts.len() >= 20 && ts.ends_with('Z'),
        "test events use UTC timestamps ending in Z, got {ts:?}"
    );
    format!("qwen-logs-{}", ts[..10].replace('-', "."))
}

/// Every event the clients sent is stored exactly once, equal (as JSON) to what was
/// sent, in the index its rule gives; nothing else is stored and nothing is dead-lettered.
/// `runs` may come from several clients that used the same lumberd.
pub fn assert_stored_once(lumberd: &Lumberd, runs: &[(&ClientRun, IndexRule)]) {
    let stored = lumberd.events_by_index();
    // test_id -> [(index, event)]
    let mut found: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    let mut without_id = Vec::new();
    for (index, events) in &stored {
        for ev in events {
            match ev.get("test_id").and_then(Value::as_str) {
                Some(id) => found
                    .entry(id.to_string())
                    .or_default()
                    .push((index.clone(), ev.clone())),
                None => without_id.push((index.clone(), ev.clone())),
            }
        }
    }

    let mut problems = String::new();
    let mut expected_total = 0usize;
    let mut expected_ids = BTreeSet::new();
    for (run, rule) in runs {
        let ids = run.ids();
        if ids.len() != run.sent.len() {
            let _ = writeln!(
                problems,
                "{}: reported {} ids but dumped {} events",
                run.what,
                ids.len(),
                run.sent.len()
            );
        }
        for (id, sent) in ids.iter().zip(&run.sent) {
            expected_total += 1;
            expected_ids.insert(id.clone());
            if sent.get("test_id").and_then(Value::as_str) != Some(id.as_str()) {
                let _ = writeln!(
                    problems,
                    "{id}: the client's dump has {sent} at that position"
                );
                continue;
            }
            let copies = found.get(id).map(Vec::as_slice).unwrap_or(&[]);
            match copies.len() {
                0 => {
                    let _ = writeln!(problems, "{id}: MISSING from every qwen-logs-*.ndjson");
                    continue;
                }
                1 => {}
                n => {
                    let where_: Vec<&str> = copies.iter().map(|(i, _)| i.as_str()).collect();
                    let _ = writeln!(problems, "{id}: stored {n} times (in {where_:?})");
                }
            }
            let (index, stored) = &copies[0];
            // An event sent without @timestamp is stamped with its receive time (checked
            // against the index below); everything else is stored as sent.
            let mut stored_cmp = stored.clone();
            if sent.get("@timestamp").is_none() {
                if let Some(o) = stored_cmp.as_object_mut() {
                    o.remove("@timestamp");
                }
            }
            if stored_cmp != *sent {
                let _ = writeln!(
                    problems,
                    "{id}: stored event differs from the one sent\n  sent:   {sent}\n  stored: {stored}"
                );
            }
            match rule {
                IndexRule::EventTimestamp => {
                    let ts = sent.get("@timestamp").and_then(Value::as_str).unwrap_or("");
                    let want = index_of_timestamp(ts);
                    if *index != want {
                        let _ = writeln!(
                            problems,
                            "{id}: @timestamp {ts} but stored in {index}, expected {want}"
                        );
                    }
                }
                IndexRule::ReceivedBetween(from, to) => {
                    let (a, b) = (
                        format!("qwen-logs-{}", utc_date(*from)),
                        format!("qwen-logs-{}", utc_date(*to)),
                    );
                    if *index != a && *index != b {
                        let _ = writeln!(
                            problems,
                            "{id}: has no @timestamp, expected the receive date {a} (or {b}), stored in {index}"
                        );
                    }
                }
            }
        }
    }
    for (id, copies) in &found {
        if !expected_ids.contains(id) {
            let _ = writeln!(
                problems,
                "{id}: stored {} time(s) but no client sent it: {}",
                copies.len(),
                copies[0].1
            );
        }
    }
    for (index, ev) in &without_id {
        let _ = writeln!(problems, "{index}: event without test_id: {ev}");
    }
    let total: usize = stored.values().map(Vec::len).sum();
    if total != expected_total && problems.is_empty() {
        let _ = writeln!(problems, "{total} events stored, {expected_total} sent");
    }
    let dead = lumberd.deadletters_by_index();
    for (index, evs) in &dead {
        for ev in evs {
            let _ = writeln!(
                problems,
                "dead letter in {index}: {}",
                super::truncate(&ev.to_string(), 500)
            );
        }
    }

    if !problems.is_empty() {
        let counts: Vec<String> = stored
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.len()))
            .collect();
        panic!(
            "the output does not hold every event exactly once as sent:\n{}\nfiles: {counts:?}\n\
             --- clients ---\n{}\n--- lumberd logs ---\n{}",
            super::truncate(&problems, 20000),
            runs.iter()
                .map(|(r, _)| r.describe())
                .collect::<Vec<_>>()
                .join("\n"),
            super::truncate(&lumberd.logs(), 20000)
        );
    }
}
