//! The ACK contract of one connection, driven in-process: the test holds the output queue,
//! so it decides when (and whether) a batch is delivered. Time is paused: timeouts fire as
//! soon as nothing else can run, never by sleeping.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use lumberd::config::Settings;
use lumberd::connection::{serve, ConnectionEnd, Shared};
use lumberd::metrics::Metrics;
use lumberd::output::Batch;
use lumberd::pipeline::Pipeline;
use lumberd::protocol::{encode_window, Compression};
use lumberd::server::settings::ServerSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Conn {
    client: DuplexStream,
    output: mpsc::Receiver<Batch>,
    budget: Arc<Semaphore>,
    task: JoinHandle<ConnectionEnd>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
}

fn start(tweak: impl FnOnce(&mut ServerSettings)) -> Conn {
    let mut settings = Settings::load(None, Vec::new()).expect("defaults").server;
    tweak(&mut settings);
    let (tx, output) = mpsc::channel(64);
    let budget = Arc::new(Semaphore::new(settings.max_inflight_bytes as usize));
    let shutdown = CancellationToken::new();
    let metrics = Metrics::new().unwrap();
    let shared = Arc::new(Shared {
        settings,
        tls: None,
        pipeline: Pipeline::passthrough(),
        output: tx,
        budget: budget.clone(),
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
    });
    let (client, server) = tokio::io::duplex(256 * 1024);
    let task = tokio::spawn(serve(
        server,
        "127.0.0.1:40000".parse().unwrap(),
        None,
        shared,
    ));
    Conn {
        client,
        output,
        budget,
        task,
        shutdown,
        metrics,
    }
}

fn window(n: usize, compression: Compression) -> BytesMut {
    let events: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"@timestamp":"2025-04-05T10:23:45.000Z","message":"event {i}"}}"#))
        .collect();
    let mut wire = BytesMut::new();
    encode_window(1, &events, compression, &mut wire);
    wire
}

/// The next 6-byte frame from the server, or `None` if nothing arrives within `wait`
/// (paused time: this does not sleep) or the connection closed.
async fn next_ack(client: &mut DuplexStream, wait: Duration) -> Option<(u8, u8, u32)> {
    let mut b = [0u8; 6];
    match tokio::time::timeout(wait, client.read_exact(&mut b)).await {
        Ok(Ok(_)) => Some((b[0], b[1], u32::from_be_bytes([b[2], b[3], b[4], b[5]]))),
        _ => None,
    }
}

/// Asserts that the next frame, within `secs` seconds, is the v2 ACK `seq`.
async fn expect_ack(client: &mut DuplexStream, secs: u64, seq: u32) {
    let got = next_ack(client, Duration::from_secs(secs)).await;
    assert_eq!(
        got,
        Some((b'2', b'A', seq)),
        "expected ACK {seq} within {secs}s"
    );
}

async fn closed(client: &mut DuplexStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(600), client.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(start_paused = true)]
async fn window_is_acknowledged_only_after_the_output_reports_it_durable() {
    let mut c = start(|_| {});
    c.client
        .write_all(&window(3, Compression::Level(3)))
        .await
        .unwrap();
    let batch = c
        .output
        .recv()
        .await
        .expect("the window's events reach the output");
    assert_eq!(batch.records.len(), 3);
    assert_eq!(
        next_ack(&mut c.client, Duration::from_secs(1)).await,
        None,
        "no ACK may be sent before the output delivered the batch"
    );
    batch.delivery.delivered();
    expect_ack(&mut c.client, 1, 3).await;
}

#[tokio::test(start_paused = true)]
async fn keepalive_ack_zero_is_sent_while_a_window_waits_for_the_output() {
    let mut c = start(|s| s.keepalive_interval = Duration::from_secs(5));
    c.client
        .write_all(&window(2, Compression::None))
        .await
        .unwrap();
    let batch = c.output.recv().await.unwrap();
    let start = tokio::time::Instant::now();
    expect_ack(&mut c.client, 6, 0).await;
    assert!(
        start.elapsed() >= Duration::from_secs(5),
        "keep-alive came after {:?}",
        start.elapsed()
    );
    expect_ack(&mut c.client, 6, 0).await;
    batch.delivery.delivered();
    expect_ack(&mut c.client, 1, 2).await;
}

#[tokio::test(start_paused = true)]
async fn connection_closes_without_ack_when_the_output_stalls() {
    let mut c = start(|s| {
        s.keepalive_interval = Duration::from_secs(5);
        s.stall_timeout = Duration::from_secs(30);
    });
    c.client
        .write_all(&window(2, Compression::None))
        .await
        .unwrap();
    let _held = c.output.recv().await.unwrap();
    let mut acks = Vec::new();
    while let Some(ack) = next_ack(&mut c.client, Duration::from_secs(60)).await {
        acks.push(ack.2);
    }
    assert!(
        acks.iter().all(|&s| s == 0),
        "only keep-alives may be sent, got {acks:?}"
    );
    assert!(
        !acks.is_empty(),
        "keep-alives must flow until the stall timeout"
    );
    let end = c.task.await.unwrap();
    assert!(
        matches!(end, ConnectionEnd::Stalled(_)),
        "ended with {end:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn pipelined_windows_are_acknowledged_in_order_even_when_delivered_out_of_order() {
    let mut c = start(|_| {});
    let mut both = window(2, Compression::Level(1));
    let mut second = BytesMut::new();
    encode_window(
        1,
        &[r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#],
        Compression::None,
        &mut second,
    );
    both.extend_from_slice(&second);
    c.client.write_all(&both).await.unwrap();
    let first = c.output.recv().await.unwrap();
    let later = c.output.recv().await.unwrap();
    assert_eq!((first.records.len(), later.records.len()), (2, 3));
    later.delivery.delivered();
    assert_eq!(
        next_ack(&mut c.client, Duration::from_secs(1)).await,
        None,
        "the second window must not be acknowledged before the first"
    );
    first.delivery.delivered();
    expect_ack(&mut c.client, 1, 2).await;
    expect_ack(&mut c.client, 1, 3).await;
}

#[tokio::test(start_paused = true)]
async fn window_whose_batch_is_dropped_undelivered_is_never_acknowledged() {
    let mut c = start(|_| {});
    c.client
        .write_all(&window(2, Compression::None))
        .await
        .unwrap();
    drop(c.output.recv().await.unwrap());
    let mut acks = Vec::new();
    while let Some(ack) = next_ack(&mut c.client, Duration::from_secs(60)).await {
        acks.push(ack.2);
    }
    assert!(acks.is_empty(), "a failed window got ACKs {acks:?}");
    assert!(matches!(
        c.task.await.unwrap(),
        ConnectionEnd::DeliveryFailed(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn batches_split_at_batch_events_and_never_mix_windows() {
    let mut c = start(|s| s.batch_events = 4);
    let mut wire = window(10, Compression::Level(3));
    wire.extend_from_slice(&window(3, Compression::None));
    c.client.write_all(&wire).await.unwrap();
    let mut sizes = Vec::new();
    for _ in 0..4 {
        let b = c.output.recv().await.unwrap();
        sizes.push(b.records.len());
        b.delivery.delivered();
    }
    assert_eq!(
        sizes,
        vec![4, 4, 2, 3],
        "window of 10 in batches of 4, then the window of 3"
    );
    expect_ack(&mut c.client, 1, 10).await;
    expect_ack(&mut c.client, 1, 3).await;
}

#[tokio::test(start_paused = true)]
async fn reading_stops_when_the_inflight_budget_is_exhausted_and_resumes_after_delivery() {
    // Budget for about two events: the reader must stop before taking the third.
    let mut c = start(|s| {
        s.max_inflight_bytes = 300;
        s.batch_events = 1;
    });
    let wire = window(6, Compression::None);
    let (mut rd, mut wr) = tokio::io::split(c.client);
    let writer = tokio::spawn(async move {
        wr.write_all(&wire).await.unwrap();
        wr
    });
    let first = c.output.recv().await.unwrap();
    let second = c.output.recv().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(10), c.output.recv())
            .await
            .is_err(),
        "a third event was queued although the budget was exhausted"
    );
    assert!(
        c.budget.available_permits() < 150,
        "budget not in use: {}",
        c.budget.available_permits()
    );
    // The output takes the events out of memory: their budget returns and reading resumes.
    drop(first.budget);
    drop(second.budget);
    let mut rest = Vec::new();
    for _ in 0..4 {
        let mut b = c
            .output
            .recv()
            .await
            .expect("reading resumes once budget is released");
        b.budget.take();
        rest.push(b);
    }
    writer.await.unwrap();
    first.delivery.delivered();
    second.delivery.delivered();
    rest.into_iter().for_each(|b| b.delivery.delivered());
    let mut b = [0u8; 6];
    rd.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, &[b'2', b'A', 0, 0, 0, 6]);
}

#[tokio::test(start_paused = true)]
async fn idle_connection_is_closed_after_idle_timeout() {
    let mut c = start(|s| s.idle_timeout = Duration::from_secs(60));
    c.client
        .write_all(&window(1, Compression::None))
        .await
        .unwrap();
    c.output.recv().await.unwrap().delivery.delivered();
    expect_ack(&mut c.client, 1, 1).await;
    assert!(
        closed(&mut c.client).await,
        "idle connection must be closed"
    );
    assert!(matches!(c.task.await.unwrap(), ConnectionEnd::Idle(_)));
}

#[tokio::test(start_paused = true)]
async fn waiting_for_an_ack_is_not_idle() {
    let mut c = start(|s| {
        s.idle_timeout = Duration::from_secs(10);
        s.keepalive_interval = Duration::from_secs(5);
        s.stall_timeout = Duration::from_secs(120);
    });
    c.client
        .write_all(&window(1, Compression::None))
        .await
        .unwrap();
    let batch = c.output.recv().await.unwrap();
    // Well past the idle timeout, only keep-alives: the connection stays open.
    for _ in 0..6 {
        expect_ack(&mut c.client, 6, 0).await;
    }
    batch.delivery.delivered();
    expect_ack(&mut c.client, 1, 1).await;
}

#[tokio::test(start_paused = true)]
async fn protocol_error_closes_the_connection_without_acking_the_broken_window() {
    let mut c = start(|_| {});
    let mut wire = window(1, Compression::None);
    // A second window whose data frame is cut by a premature W.
    wire.extend_from_slice(b"2W\0\0\0\x02");
    wire.extend_from_slice(&window(1, Compression::None));
    c.client.write_all(&wire).await.unwrap();
    let first = c.output.recv().await.unwrap();
    first.delivery.delivered();
    let end = c.task.await.unwrap();
    match end {
        ConnectionEnd::Protocol(e) => assert_eq!(e.error.kind().label(), "premature_window", "{e}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    let mut rest = Vec::new();
    c.client.read_to_end(&mut rest).await.unwrap();
    assert!(
        rest.chunks(6)
            .all(|a| a == [b'2', b'A', 0, 0, 0, 1] || a[2..] == [0, 0, 0, 0]),
        "only the complete first window may be acknowledged, got {rest:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn closing_without_a_byte_is_a_probe_not_an_error() {
    let c = start(|_| {});
    drop(c.client);
    assert!(matches!(c.task.await.unwrap(), ConnectionEnd::Probe));
}

#[tokio::test(start_paused = true)]
async fn shutdown_inside_a_window_reads_it_to_the_end_and_acknowledges_it() {
    let mut c = start(|_| {});
    let wire = window(4, Compression::None);
    let half = wire.len() / 2;
    c.client.write_all(&wire[..half]).await.unwrap();
    // Let the reader take the first half in before the shutdown.
    assert_eq!(
        next_ack(&mut c.client, Duration::from_millis(10)).await,
        None
    );
    c.shutdown.cancel();
    c.client.write_all(&wire[half..]).await.unwrap();
    let batch = c
        .output
        .recv()
        .await
        .expect("the window begun before the shutdown is read to its end");
    assert_eq!(batch.records.len(), 4);
    batch.delivery.delivered();
    expect_ack(&mut c.client, 1, 4).await;
    assert!(
        closed(&mut c.client).await,
        "the connection closes once the window is acknowledged"
    );
    assert!(matches!(c.task.await.unwrap(), ConnectionEnd::Shutdown));
}

#[tokio::test(start_paused = true)]
async fn shutdown_between_windows_stops_reading_but_acknowledges_what_is_pending() {
    let mut c = start(|_| {});
    c.client
        .write_all(&window(2, Compression::None))
        .await
        .unwrap();
    let batch = c.output.recv().await.unwrap();
    c.shutdown.cancel();
    // A window sent after the shutdown is not read: the client resends it elsewhere.
    c.client
        .write_all(&window(3, Compression::None))
        .await
        .unwrap();
    batch.delivery.delivered();
    expect_ack(&mut c.client, 1, 2).await;
    assert!(closed(&mut c.client).await);
    assert!(matches!(c.task.await.unwrap(), ConnectionEnd::Shutdown));
    assert!(
        c.output.try_recv().is_err(),
        "no event of the window sent after the shutdown reached the output"
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_count_frames_events_acks_and_release_held_events() {
    let mut c = start(|s| s.keepalive_interval = Duration::from_secs(5));
    let m = &c.metrics.receive;
    let mut wire = window(3, Compression::Level(3));
    wire.extend_from_slice(&window(2, Compression::None));
    c.client.write_all(&wire).await.unwrap();
    let first = c.output.recv().await.unwrap();
    let second = c.output.recv().await.unwrap();
    assert_eq!(m.events.get(), 5);
    assert_eq!(
        m.inflight_events.get(),
        5,
        "events are held until their window is acknowledged"
    );
    expect_ack(&mut c.client, 6, 0).await;
    assert_eq!(m.keepalives.get(), 1);
    first.delivery.delivered();
    expect_ack(&mut c.client, 1, 3).await;
    assert_eq!(m.inflight_events.get(), 2);
    second.delivery.delivered();
    expect_ack(&mut c.client, 1, 2).await;
    assert_eq!(m.windows_acknowledged.get(), 2);
    assert_eq!(m.inflight_events.get(), 0);
    assert_eq!(m.ack_latency.get_sample_count(), 2);
    assert_eq!(m.received_bytes.get(), wire.len() as u64);
    let text = String::from_utf8(c.metrics.render()).unwrap();
    for series in [
        "lumberd_frames_received_total{type=\"window\"} 2",
        "lumberd_frames_received_total{type=\"compressed\"} 1",
        "lumberd_frames_received_total{type=\"json\"} 5",
    ] {
        assert!(text.contains(series), "missing {series}");
    }
    assert!(
        m.inflated_bytes.get() > 0,
        "the C frame's inflated bytes are counted"
    );
}

#[tokio::test(start_paused = true)]
async fn a_connection_ending_with_unacknowledged_events_stops_holding_them() {
    let mut c = start(|_| {});
    c.client
        .write_all(&window(4, Compression::None))
        .await
        .unwrap();
    let batch = c.output.recv().await.unwrap();
    assert_eq!(c.metrics.receive.inflight_events.get(), 4);
    drop(batch);
    drop(c.client);
    c.task.await.unwrap();
    assert_eq!(
        c.metrics.receive.inflight_events.get(),
        0,
        "a failed window's events are no longer held once its connection is gone"
    );
}
