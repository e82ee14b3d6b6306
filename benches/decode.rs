//! Decoder and pipeline throughput over Filebeat-shaped windows: the recorded go-lumber
//! 2048-event window, synthetic windows of ~950-byte inference-log events
//! (PERFORMANCE.md's shape) bare and at zlib level 3, and the golden corpus
//! (tests/corpus, escapes, failures and two huge prompts). The pipeline (the default
//! Qwen filter, ids, metrics, routing, writing the document) is timed alone on the
//! decoded payloads, to compare its cost per event with the decoding it follows, and
//! again with one filter condition added (`pipeline+if`), for the cost of a condition.
//!
//! Criterion prints bytes/s; a summary (CPU ns per event, wire and inflated MB/s, events
//! per CPU-second) is written to target/bench/decode.json, the pipeline with and without
//! the condition timed in alternation. Every iteration checks the number of
//! frames decoded, so a broken path cannot post a fast figure.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use chrono::Utc;
use criterion::{criterion_group, Criterion, Throughput};
use lumberd::pipeline::{
    Condition, Filter, Pipeline, PipelineSettings, Scratch, Step as FilterStep,
};
use lumberd::protocol::{encode_window, Compression, DataFrame, Limits, Payload, Session, Step};
use lumberd::record::Origin;
use rustix::time::{clock_gettime, ClockId};

struct Case {
    name: &'static str,
    wire: Vec<u8>,
    events: usize,
}

/// Pseudo-random words, so the zlib ratio is near real logs' (~4-6x), not a repeat's.
fn noise(mut x: u64, words: usize) -> String {
    const WORDS: [&str; 16] = [
        "模型", "推理", "context", "token", "latency", "请", "解释", "cache", "batch", "GPU",
        "用户", "prompt", "stream", "温度", "sampling", "answer",
    ];
    let mut out = String::new();
    for _ in 0..words {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push_str(WORDS[(x >> 60) as usize]);
        out.push_str(&format!("{:x} ", (x >> 20) & 0xfff));
    }
    out
}

fn inference_event(i: usize) -> String {
    let message = format!(
        r#"{{"timestamp":"2025-04-05T10:23:{:02}Z","level":"INFO","request_id":"req_{:012x}","prompt":"{}","response_length":{},"inference_time_ms":{},"status":"success"}}"#,
        i % 60,
        (i as u64).wrapping_mul(0x9E3779B97F4A7C15) >> 16,
        noise(i as u64, 30),
        100 + i % 400,
        300 + i % 900
    );
    let doc = serde_json::json!({
        "@timestamp": "2025-04-05T10:23:45.123Z",
        "message": message,
        "log": {"file": {"path": "/var/log/qwen/inference.log"}, "offset": i * 950},
        "input": {"type": "filestream"},
        "host": {"name": "gpu-node-17"},
        "agent": {"id": "3f1c2a9e-8d7b-4e5f-a6c1-0b2d4e6f8a9c", "name": "gpu-node-17", "type": "filebeat", "version": "8.11.3"},
        "ecs": {"version": "8.0.0"}
    });
    serde_json::to_string(&doc).unwrap()
}

fn cases() -> Vec<Case> {
    let events: Vec<String> = (0..2048).map(inference_event).collect();
    let mut out = Vec::new();
    for (name, c) in [
        ("synthetic-2048-c0", Compression::None),
        ("synthetic-2048-c3", Compression::Level(3)),
    ] {
        let mut wire = BytesMut::new();
        encode_window(1, &events, c, &mut wire);
        out.push(Case {
            name,
            wire: wire.to_vec(),
            events: 2048,
        });
    }
    let corpus = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/inputs.ndjson"),
    )
    .expect("tests/corpus/inputs.ndjson");
    let corpus: Vec<&str> = corpus.lines().collect();
    let mut wire = BytesMut::new();
    encode_window(1, &corpus, Compression::Level(3), &mut wire);
    out.push(Case {
        name: "corpus-124-c3",
        wire: wire.to_vec(),
        events: corpus.len(),
    });
    let recorded = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("proto-fixtures/valid/go-lumber-sync-c3-w2048.bin");
    if let Ok(wire) = std::fs::read(&recorded) {
        out.push(Case {
            name: "recorded-go-lumber-2048-c3",
            wire,
            events: 2048,
        });
    }
    out
}

/// Calls `on_json` with every `J` payload of a whole stream, read by the session the
/// connection reads with.
fn each_json(wire: &[u8], mut on_json: impl FnMut(bytes::Bytes)) {
    let mut session = Session::new(Limits::default());
    session.buffer().extend_from_slice(wire);
    session.end_of_stream();
    loop {
        match session.next().expect("valid stream") {
            Some(Step::Event {
                frame:
                    DataFrame {
                        payload: Payload::Json(payload),
                        ..
                    },
                ..
            }) => on_json(payload),
            Some(Step::End { .. }) => return,
            Some(_) => {}
            None => unreachable!("the whole stream is buffered"),
        }
    }
}

/// Decodes the whole stream; returns (data frames, inflated payload bytes).
fn decode(wire: &[u8]) -> (usize, usize) {
    let (mut n, mut bytes) = (0, 0);
    each_json(wire, |payload| {
        n += 1;
        bytes += payload.len();
        black_box(payload);
    });
    (n, bytes)
}

fn decode_and_route(wire: &[u8], pipeline: &Pipeline, origin: &Origin) -> usize {
    let mut cache = Scratch::default();
    let mut n = 0;
    each_json(wire, |payload| {
        black_box(pipeline.process_json(payload, origin, &mut cache));
        n += 1;
    });
    n
}

/// The decoded payloads of a stream, for timing the pipeline alone.
fn payloads(wire: &[u8]) -> Vec<bytes::Bytes> {
    let mut out = Vec::new();
    each_json(wire, |payload| out.push(payload));
    out
}

/// Runs every payload through the pipeline; checks each became an event.
fn run_pipeline(payloads: &[bytes::Bytes], pipeline: &Pipeline, origin: &Origin) -> usize {
    let mut scratch = Scratch::default();
    let mut n = 0;
    for p in payloads {
        let r = pipeline
            .process_json(p.clone(), origin, &mut scratch)
            .into_record()
            .expect("nothing dropped");
        n += usize::from(r.kind() == lumberd::record::RecordKind::Event);
        black_box(r);
    }
    n
}

/// The default pipeline plus one condition every event evaluates (after `json`, on a
/// parsed field) and no event meets, so the figures differ only by the condition.
fn pipeline_with_condition() -> Pipeline {
    let mut settings = PipelineSettings::qwen();
    settings.filters.push(FilterStep {
        filter: Filter::Drop {
            field: None,
            values: Vec::new(),
        },
        when: Some(Condition::parse(r#"[level] == "TRACE""#).expect("a valid condition")),
    });
    Pipeline::new(&settings, &prometheus::Registry::new()).expect("metrics register")
}

fn origin() -> Origin {
    Origin::plain("127.0.0.1:5044".parse().unwrap(), Utc::now())
}

fn bench(c: &mut Criterion) {
    let pipeline = Pipeline::default();
    let with_if = pipeline_with_condition();
    let origin = origin();
    for case in cases() {
        let mut g = c.benchmark_group(case.name);
        g.throughput(Throughput::Bytes(case.wire.len() as u64));
        g.bench_function("decode", |b| {
            b.iter(|| assert_eq!(decode(black_box(&case.wire)).0, case.events))
        });
        let decoded = payloads(&case.wire);
        g.bench_function("pipeline", |b| {
            b.iter(|| assert_eq!(run_pipeline(&decoded, &pipeline, &origin), case.events))
        });
        g.bench_function("pipeline+if", |b| {
            b.iter(|| assert_eq!(run_pipeline(&decoded, &with_if, &origin), case.events))
        });
        g.bench_function("decode+route", |b| {
            b.iter(|| {
                assert_eq!(
                    decode_and_route(black_box(&case.wire), &pipeline, &origin),
                    case.events
                )
            })
        });
        g.finish();
    }
}

/// This thread's CPU time: on a shared machine, time spent descheduled is not the code's.
fn cpu_now() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Calls `f` for about `budget` of CPU time, returning CPU seconds per call.
fn time_per_call(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = cpu_now();
    let mut calls = 0u32;
    while cpu_now() - start < budget {
        f();
        calls += 1;
    }
    (cpu_now() - start).as_secs_f64() / f64::from(calls)
}

/// CPU seconds per call of `a` and of `b`, called in alternation for about `budget` in
/// all, so that drift on a shared machine (frequency, neighbours' cache use) falls on
/// both alike and their difference is the code's.
fn time_pair(budget: Duration, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    a();
    b();
    let (mut ta, mut tb, mut calls) = (Duration::ZERO, Duration::ZERO, 0u32);
    while ta + tb < budget {
        let t0 = cpu_now();
        a();
        let t1 = cpu_now();
        b();
        ta += t1 - t0;
        tb += cpu_now() - t1;
        calls += 1;
    }
    (
        ta.as_secs_f64() / f64::from(calls),
        tb.as_secs_f64() / f64::from(calls),
    )
}

fn write_summary() {
    let pipeline = Pipeline::default();
    let with_if = pipeline_with_condition();
    let origin = origin();
    let mut rows = Vec::new();
    for case in cases() {
        let (n, inflated) = decode(&case.wire);
        assert_eq!(n, case.events);
        let t_decode = time_per_call(Duration::from_secs(2), || {
            assert_eq!(decode(&case.wire).0, case.events);
        });
        let t_route = time_per_call(Duration::from_secs(2), || {
            assert_eq!(
                decode_and_route(&case.wire, &pipeline, &origin),
                case.events
            );
        });
        let decoded = payloads(&case.wire);
        let (t_pipeline, t_if) = time_pair(
            Duration::from_secs(4),
            || assert_eq!(run_pipeline(&decoded, &pipeline, &origin), case.events),
            || assert_eq!(run_pipeline(&decoded, &with_if, &origin), case.events),
        );
        let per_event = |t: f64| t * 1e9 / case.events as f64;
        rows.push(serde_json::json!({
            "case": case.name,
            "events": case.events,
            "wire_bytes": case.wire.len(),
            "inflated_payload_bytes": inflated,
            "decode_ns_per_event": per_event(t_decode),
            "decode_events_per_core_second": case.events as f64 / t_decode,
            "decode_wire_mb_per_s": case.wire.len() as f64 / t_decode / 1e6,
            "decode_payload_mb_per_s": inflated as f64 / t_decode / 1e6,
            "decode_route_ns_per_event": per_event(t_route),
            "decode_route_events_per_core_second": case.events as f64 / t_route,
            "pipeline_ns_per_event": per_event(t_pipeline),
            "pipeline_events_per_core_second": case.events as f64 / t_pipeline,
            "pipeline_payload_mb_per_s": inflated as f64 / t_pipeline / 1e6,
            "pipeline_to_decode_ratio": t_pipeline / t_decode,
            "pipeline_with_condition_ns_per_event": per_event(t_if),
            "condition_ns_per_event": per_event(t_if - t_pipeline),
            "pipeline_with_condition_ratio": t_if / t_pipeline,
        }));
        println!(
            "{:<28} decode {:>7.0} ns/event ({:>6.0} MB/s payload)   pipeline {:>7.0} ns/event ({:.2}x decode)   +if {:>7.0} ns/event ({:.3}x)   decode+route {:>7.0} ns/event",
            case.name,
            per_event(t_decode),
            inflated as f64 / t_decode / 1e6,
            per_event(t_pipeline),
            t_pipeline / t_decode,
            per_event(t_if),
            t_if / t_pipeline,
            per_event(t_route)
        );
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("decode.json");
    std::fs::write(&path, serde_json::to_string_pretty(&rows).unwrap()).unwrap();
    println!("summary: {}", path.display());
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).sample_size(20);
    targets = bench
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    write_summary();
}
