//! Replays every stream in `proto-fixtures/` through `protocol::Session`, the driver the
//! connection reads with (no sockets), whole and in several chunkings, and checks it
//! against its `.expect.json`.
//!
//! - `invalid/`: the first error has the listed kind, exactly the listed windows
//!   complete before it (docs/PROTOCOL.md rule 5), and the chunking changes neither.
//! - `valid/` and `payload/`: every window completes with the listed ACK and the events
//!   decode to the listed JSON values; `payload/` also goes through the pipeline, whose
//!   dead letters must match (rule 5: payload errors are not framing errors).
//!
//! `LUMBERD_REQUIRE_FIXTURES=1` (set by `make test`) makes an empty `valid/` a failure.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use lumberd::pipeline::{Pipeline, Scratch};
use lumberd::protocol::{DataFrame, Frame, Limits, Payload, Transcript};
use lumberd::record::{Origin, RecordKind};
use serde_json::Value;

// ---- replay driver -------------------------------------------------------------------

/// How the bytes reach the decoder, as TCP reads would.
#[derive(Debug, Clone, Copy)]
enum Chunking {
    Whole,
    Fixed(usize),
    /// Random split points from a fixed seed (reads of 1..=max bytes).
    Random {
        seed: u64,
        max: usize,
    },
}

impl std::fmt::Display for Chunking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Chunking::Whole => write!(f, "whole"),
            Chunking::Fixed(n) => write!(f, "{n}-byte chunks"),
            Chunking::Random { seed, max } => write!(f, "random chunks (seed {seed}, max {max})"),
        }
    }
}

const CHUNKINGS: [Chunking; 6] = [
    Chunking::Whole,
    Chunking::Fixed(1),
    Chunking::Fixed(7),
    Chunking::Random { seed: 1, max: 16 },
    Chunking::Random { seed: 2, max: 300 },
    Chunking::Random { seed: 3, max: 4096 },
];

/// splitmix64: a fixed-seed generator, so a failing split is reproducible from its seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn chunks(bytes: &[u8], chunking: Chunking) -> Vec<&[u8]> {
    match chunking {
        Chunking::Whole => vec![bytes],
        Chunking::Fixed(n) => bytes.chunks(n).collect(),
        Chunking::Random { seed, max } => {
            let mut rng = SplitMix(seed);
            let mut out = Vec::new();
            let mut rest = bytes;
            while !rest.is_empty() {
                let n = (1 + rng.next() as usize % max).min(rest.len());
                let (head, tail) = rest.split_at(n);
                out.push(head);
                rest = tail;
            }
            out
        }
    }
}

/// What a connection would have seen, `bytes` read as `chunking` says: the frames, the
/// windows it could ACK, and the error that ended it.
fn replay(bytes: &[u8], limits: Limits, chunking: Chunking) -> Transcript {
    Transcript::replay(limits, chunks(bytes, chunking))
}

fn acked(r: &Transcript) -> Vec<u32> {
    r.windows.iter().map(|w| w.ack().seq).collect()
}

/// The window rules every replay must keep, whatever the input: each completed window
/// holds exactly its announced number of data frames, and its ACK carries the window's
/// version byte and the sequence number of its own last data frame, never more.
fn check_window_invariants(r: &Transcript) -> Result<(), String> {
    let mut windows = r.windows.iter();
    let mut open: Option<(u8, u32, u32)> = None; // version, expected, received
    for frame in &r.frames {
        match frame {
            Frame::Window { version, count } => open = Some((*version, *count, 0)),
            Frame::Data(DataFrame { seq, .. }) => {
                let Some((version, expected, received)) = open.as_mut() else {
                    return Err(format!("data frame seq {seq} accepted outside a window"));
                };
                *received += 1;
                if received == expected {
                    let w = windows
                        .next()
                        .ok_or_else(|| format!("window ending at seq {seq} never completed"))?;
                    let ack = w.ack();
                    if (ack.version, ack.seq, w.count) != (*version, *seq, *expected) {
                        return Err(format!(
                            "window of {expected} ending at seq {seq} (version {version}) \
                             was acked as {ack:?} with count {}",
                            w.count
                        ));
                    }
                    open = None;
                }
            }
        }
    }
    if let Some(extra) = windows.next() {
        return Err(format!("window {extra:?} completed without its frames"));
    }
    Ok(())
}

// ---- fixtures ------------------------------------------------------------------------

struct Fixture {
    name: String,
    bytes: Vec<u8>,
    expect: Value,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proto-fixtures")
}

/// Every `<name>.bin` with its `<name>.expect.json` in `proto-fixtures/<dir>`, by name.
fn load(dir: &str) -> Vec<Fixture> {
    let dir = fixtures_dir().join(dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<Fixture> = entries
        .map(|e| e.expect("readable fixture directory").path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .map(|bin| {
            let name = bin.file_stem().unwrap().to_string_lossy().into_owned();
            let expect_path = bin.with_extension("expect.json");
            let text = std::fs::read_to_string(&expect_path)
                .unwrap_or_else(|e| panic!("{name}: cannot read {}: {e}", expect_path.display()));
            let expect = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{name}: {} is not JSON: {e}", expect_path.display()));
            Fixture {
                name,
                bytes: std::fs::read(&bin).unwrap(),
                expect,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn limits_of(f: &Fixture) -> Limits {
    let mut limits = Limits::default();
    if let Some(over) = f.expect.get("limits").and_then(Value::as_object) {
        for (key, value) in over {
            let n = value
                .as_u64()
                .unwrap_or_else(|| panic!("{}: limit {key} is not a number", f.name));
            match key.as_str() {
                "max_frame_bytes" => limits.max_frame_bytes = n as u32,
                "max_inflated_bytes" => limits.max_inflated_bytes = n,
                "max_window_events" => limits.max_window_events = n as u32,
                other => panic!("{}: unknown limit {other:?}", f.name),
            }
        }
    }
    limits
}

/// `(version byte, count, last_seq)` of every expected window. `version` is written as
/// the protocol number (2) by the recorders; the byte (50) is accepted too.
fn expected_windows(f: &Fixture) -> Vec<(u8, u32, u32)> {
    let windows = f.expect["windows"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: expect.json has no \"windows\" list", f.name));
    windows
        .iter()
        .map(|w| {
            let num = |k: &str| {
                w[k].as_u64()
                    .unwrap_or_else(|| panic!("{}: window {w} has no {k}", f.name))
            };
            let v = num("version") as u8;
            let version = if v < 10 { b'0' + v } else { v };
            (version, num("count") as u32, num("last_seq") as u32)
        })
        .collect()
}

/// A data frame's event as the recorders write it: a `J` payload parsed as JSON, a `D`
/// frame's pairs as an object of strings; `Err` with why when the payload is not JSON.
fn frame_event(frame: &Frame) -> Option<Result<Value, String>> {
    let Frame::Data(data) = frame else {
        return None;
    };
    match &data.payload {
        Payload::Json(payload) => Some(serde_json::from_slice::<Value>(payload).map_err(|e| {
            format!(
                "payload {:?} is not JSON: {e}",
                String::from_utf8_lossy(payload)
            )
        })),
        Payload::Pairs(pairs) => Some(
            pairs
                .iter()
                .map(|(k, v)| {
                    let s = |b: &Bytes| {
                        String::from_utf8(b.to_vec()).map_err(|_| format!("D pair {b:?} not UTF-8"))
                    };
                    Ok((s(k)?, Value::String(s(v)?)))
                })
                .collect::<Result<serde_json::Map<_, _>, String>>()
                .map(Value::Object),
        ),
    }
}

/// Runs `check` on every fixture in every chunking and fails once, listing them all.
fn check_all(fixtures: &[Fixture], check: impl Fn(&Fixture, Chunking) -> Result<(), String>) {
    let mut failures = String::new();
    for f in fixtures {
        for chunking in CHUNKINGS {
            if let Err(why) = check(f, chunking) {
                let _ = writeln!(failures, "{} ({chunking}): {why}", f.name);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "fixtures that broke the rule:\n{failures}"
    );
}

/// Windows complete as expected with no error, and every ACK is right.
fn check_complete_stream(f: &Fixture, chunking: Chunking) -> Result<Transcript, String> {
    let r = replay(&f.bytes, limits_of(f), chunking);
    if let Some(e) = &r.error {
        return Err(format!(
            "failed with {} ({e}) after {} windows",
            e.error.kind(),
            r.windows.len()
        ));
    }
    check_window_invariants(&r)?;
    let got: Vec<_> = r
        .windows
        .iter()
        .map(|w| (w.ack().version, w.count, w.ack().seq))
        .collect();
    let want = expected_windows(f);
    if got != want {
        return Err(format!(
            "windows (version byte, count, ACK) differ:\n  want {want:?}\n  got  {got:?}"
        ));
    }
    Ok(r)
}

fn check_events(f: &Fixture, r: &Transcript, skip_non_json: bool) -> Result<(), String> {
    let want = f.expect["events"]
        .as_array()
        .ok_or_else(|| "expect.json has no \"events\" list".to_string())?;
    let mut got = Vec::new();
    for event in r.frames.iter().filter_map(frame_event) {
        match event {
            Ok(v) if !skip_non_json || v.is_object() => got.push(v),
            Ok(_) => {}
            Err(_) if skip_non_json => {}
            Err(why) => return Err(why),
        }
    }
    if got.len() != want.len() {
        return Err(format!(
            "{} events decoded, {} expected",
            got.len(),
            want.len()
        ));
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g != w {
            return Err(format!("event {i} differs:\n  want {w}\n  got  {g}"));
        }
    }
    Ok(())
}

// ---- invalid/ ------------------------------------------------------------------------

#[test]
fn every_invalid_stream_fails_with_its_error_kind_after_exactly_its_acked_windows() {
    let fixtures = load("invalid");
    assert!(
        !fixtures.is_empty(),
        "proto-fixtures/invalid/ has no fixtures: run proto-fixtures/invalid/generate.py"
    );
    check_all(&fixtures, |f, chunking| {
        let want_kind = f.expect["error_kind"]
            .as_str()
            .ok_or("expect.json has no error_kind")?;
        let want_acked: Vec<u32> = serde_json::from_value(f.expect["acked_windows"].clone())
            .map_err(|e| format!("acked_windows: {e}"))?;
        let r = replay(&f.bytes, limits_of(f), chunking);
        check_window_invariants(&r)?;
        match r.error.as_ref().map(|e| &e.error) {
            None => return Err(format!("no error; expected {want_kind}")),
            Some(e) if e.kind().label() != want_kind => {
                return Err(format!("error {} ({e}); expected {want_kind}", e.kind()))
            }
            Some(_) => {}
        }
        if acked(&r) != want_acked {
            return Err(format!(
                "ACKs before the error: want {want_acked:?}, got {:?}",
                acked(&r)
            ));
        }
        Ok(())
    });
}

#[test]
fn chunking_never_changes_the_frames_decoded_before_an_error() {
    check_all(&load("invalid"), |f, chunking| {
        let whole = replay(&f.bytes, limits_of(f), Chunking::Whole);
        let r = replay(&f.bytes, limits_of(f), chunking);
        if r.frames != whole.frames {
            return Err(format!(
                "{} frames, {} when decoded whole (first difference at frame {})",
                r.frames.len(),
                whole.frames.len(),
                r.frames
                    .iter()
                    .zip(&whole.frames)
                    .position(|(a, b)| a != b)
                    .unwrap_or(r.frames.len().min(whole.frames.len()))
            ));
        }
        Ok(())
    });
}

// ---- valid/ --------------------------------------------------------------------------

#[test]
fn recorded_fixtures_are_present_when_required() {
    let required = std::env::var("LUMBERD_REQUIRE_FIXTURES").is_ok_and(|v| v == "1");
    let n = load("valid").len();
    if required {
        assert!(
            n > 0,
            "LUMBERD_REQUIRE_FIXTURES=1 but proto-fixtures/valid/ has no <name>.bin + \
             <name>.expect.json: record them with `make fixtures`"
        );
    } else if n == 0 {
        eprintln!("proto-fixtures/valid/ is empty: recorded-stream tests checked nothing");
    }
}

#[test]
fn every_chunking_of_a_recorded_stream_yields_the_same_windows() {
    check_all(&load("valid"), |f, chunking| {
        check_complete_stream(f, chunking).map(drop)
    });
}

#[test]
fn recorded_streams_decode_to_the_recorded_events() {
    check_all(&load("valid"), |f, chunking| {
        let r = check_complete_stream(f, chunking)?;
        check_events(f, &r, false)
    });
}

// ---- payload/ ------------------------------------------------------------------------

#[test]
fn payload_errors_do_not_stop_a_window_from_completing() {
    let fixtures = load("payload");
    assert!(
        !fixtures.is_empty(),
        "proto-fixtures/payload/ has no fixtures: run proto-fixtures/invalid/generate.py"
    );
    check_all(&fixtures, |f, chunking| {
        let r = check_complete_stream(f, chunking)?;
        check_events(f, &r, true)
    });
}

#[test]
fn payload_errors_become_dead_letters_and_only_objects_become_events() {
    let origin = Origin::plain("127.0.0.1:5044".parse().unwrap(), chrono::Utc::now());
    // Only payload validation is under test here: events are stored as received.
    let pipeline = Pipeline::passthrough();
    let mut failures = String::new();
    for f in load("payload") {
        let r = replay(&f.bytes, limits_of(&f), Chunking::Whole);
        let mut cache = Scratch::default();
        let mut events = Vec::new();
        let mut dead = Vec::new();
        for frame in &r.frames {
            let Frame::Data(DataFrame {
                payload: Payload::Json(payload),
                ..
            }) = frame
            else {
                continue;
            };
            let record = pipeline
                .process_json(payload.clone(), &origin, &mut cache)
                .into_record()
                .expect("the passthrough pipeline drops nothing");
            match record.kind() {
                RecordKind::Event => events.push((payload.clone(), record.doc)),
                RecordKind::DeadLetter => dead.push(payload.clone()),
            }
        }
        let want_dead = f.expect["dead_letters"].as_u64().unwrap_or(u64::MAX) as usize;
        let want_events = f.expect["events"].as_array().cloned().unwrap_or_default();
        // The input stamps events that have no @timestamp with the receive time.
        let got_events: Vec<Value> = events
            .iter()
            .zip(want_events.iter().chain(std::iter::repeat(&Value::Null)))
            .map(|((_, doc), want)| {
                let mut got: Value = serde_json::from_slice(doc).unwrap_or(Value::Null);
                if want.get("@timestamp").is_none() {
                    if let Some(o) = got.as_object_mut() {
                        o.remove("@timestamp");
                    }
                }
                got
            })
            .collect();
        if dead.len() != want_dead || got_events != want_events {
            let _ = writeln!(
                failures,
                "{}: {} dead letters (want {want_dead}), {} events (want {}); \
                 payloads taken as events: {:?}; as dead letters: {:?}",
                f.name,
                dead.len(),
                got_events.len(),
                want_events.len(),
                events
                    .iter()
                    .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
                    .collect::<Vec<_>>(),
                dead.iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect::<Vec<_>>(),
            );
        }
    }
    assert!(failures.is_empty(), "pipeline results differ:\n{failures}");
}
