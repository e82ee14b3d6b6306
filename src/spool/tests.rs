//! The spool through its public API on real files: round trips, segments and their
//! deletion, the byte budget, reopen and recovery of damaged directories.

use std::path::Path;
use std::time::Duration;

use futures_util::FutureExt;

use super::frame::{encode, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use super::open::segment_files;
use super::*;

const SEGMENT: u64 = 4096;

fn settings(dir: &Path) -> SpoolSettings {
    SpoolSettings {
        dir: dir.to_path_buf(),
        max_bytes: 1024 * 1024,
        segment_bytes: SEGMENT,
        max_record_bytes: 1024,
        queue_batches: 16,
        memory_bytes: DEFAULT_MEMORY_BYTES,
        direct_io: DEFAULT_DIRECT_IO,
    }
}

/// The same, segments written through the page cache.
fn buffered(dir: &Path) -> SpoolSettings {
    SpoolSettings {
        direct_io: false,
        ..settings(dir)
    }
}

/// A segment's length without a direct write's padding (records end in non-zero bytes).
fn unpadded_len(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |i| i as u64 + 1)
}

/// Record `i`: its number, padded to a length that varies with it.
fn rec(i: usize) -> Vec<u8> {
    let mut r = format!("record-{i:06};").into_bytes();
    r.resize(20 + (i * 37) % 300, b'a' + (i % 26) as u8);
    r
}

async fn append(app: &Appender, range: std::ops::Range<usize>) -> Appended {
    let mut b = app.batch();
    for i in range {
        b.push(&rec(i)).unwrap();
    }
    app.append(b).await.unwrap().await.unwrap()
}

/// Reads exactly `n` records, failing (not hanging) if they do not come.
async fn read(reader: &mut Reader, n: usize) -> Vec<SpoolRecord> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = tokio::time::timeout(
            Duration::from_secs(20),
            reader.next_batch(n - out.len(), usize::MAX),
        )
        .await
        .unwrap_or_else(|_| panic!("only {} of {n} records came back", out.len()))
        .unwrap();
        assert!(
            !batch.is_empty(),
            "reader ended after {} of {n} records",
            out.len()
        );
        out.extend(batch);
    }
    out
}

fn numbers(records: &[SpoolRecord]) -> Vec<usize> {
    records
        .iter()
        .map(|r| {
            let s = std::str::from_utf8(&r.data[7..13]).unwrap();
            let i: usize = s.parse().unwrap();
            assert_eq!(r.data, rec(i), "record {i} came back altered");
            i
        })
        .collect()
}

/// Nothing more is durable: the reader has nothing ready after the writer stops.
async fn assert_drained(spool: Spool, reader: &mut Reader) {
    spool.close().await;
    let rest = reader.next_batch(100, usize::MAX).await.unwrap();
    assert!(rest.is_empty(), "unexpected records: {:?}", numbers(&rest));
}

#[tokio::test]
async fn appended_records_are_read_back_in_order_once_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, mut reader) = Spool::open(settings(dir.path())).unwrap();
    let app = spool.appender();
    let a = append(&app, 0..5).await;
    let b = append(&app, 5..8).await;
    assert_eq!((a.first_seq, a.records, b.first_seq), (0, 5, 5));
    let got = read(&mut reader, 8).await;
    assert_eq!(numbers(&got), (0..8).collect::<Vec<_>>());
    assert!(got.windows(2).all(|w| w[0].position < w[1].position));
    let stats = spool.stats();
    assert_eq!(
        (stats.written, stats.read, stats.records, stats.replayed),
        (8, 8, 8, 0)
    );
    assert!(stats.oldest_append_ms.is_some());
    reader.ack(got[7].position).await.unwrap();
    let stats = spool.stats();
    assert_eq!((stats.records, stats.oldest_append_ms), (0, None));
    drop(app);
    assert_drained(spool, &mut reader).await;
}

#[tokio::test]
async fn a_reopened_spool_replays_exactly_what_was_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (spool, mut reader) = Spool::open(settings(dir.path())).unwrap();
        append(&spool.appender(), 0..40).await;
        let got = read(&mut reader, 25).await;
        reader.ack(got[14].position).await.unwrap();
        shut(spool, reader).await;
    }
    let (spool, mut reader) = Spool::open(settings(dir.path())).unwrap();
    assert!(spool.recovery().position_found);
    assert_eq!(spool.recovery().records, 25);
    let got = read(&mut reader, 25).await;
    assert_eq!(numbers(&got), (15..40).collect::<Vec<_>>());
    assert_eq!(spool.stats().replayed, 25);
    append(&spool.appender(), 40..45).await;
    let got = read(&mut reader, 5).await;
    assert_eq!(numbers(&got), (40..45).collect::<Vec<_>>());
    assert_eq!(spool.stats().replayed, 25, "new records are not replays");
    assert_drained(spool, &mut reader).await;
}

#[tokio::test]
async fn acknowledged_segments_are_deleted_and_their_bytes_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, mut reader) = Spool::open(settings(dir.path())).unwrap();
    append(&spool.appender(), 0..200).await;
    let files = segment_files(dir.path());
    assert!(
        files.len() > 5,
        "200 records should span segments: {files:?}"
    );
    for f in &files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(
            len <= SEGMENT,
            "{} is {len} bytes, over segment_bytes",
            f.display()
        );
    }
    let before = spool.stats();
    assert_eq!(before.segments, files.len());
    let got = read(&mut reader, 200).await;
    reader.ack(got[99].position).await.unwrap();
    let mid = spool.stats();
    assert!(
        mid.bytes < before.bytes && mid.segments < before.segments,
        "{mid:?}"
    );
    reader.ack(got[199].position).await.unwrap();
    let after = spool.stats();
    assert_eq!(after.segments, 1, "only the segment being written remains");
    assert_eq!(segment_files(dir.path()).len(), 1);
    // The bytes counted are the records'; a direct write's padding is not counted.
    assert_eq!(after.bytes, unpadded_len(&segment_files(dir.path())[0]));
}

#[tokio::test]
async fn a_full_spool_holds_appends_back_until_an_ack_frees_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let s = SpoolSettings {
        max_bytes: 4 * SEGMENT,
        ..settings(dir.path())
    };
    let (spool, mut reader) = Spool::open(s).unwrap();
    let app = spool.appender();
    let mut appended = 0;
    let full_batch = loop {
        let mut b = app.batch();
        b.push(&rec(appended)).unwrap();
        match app.try_append(b) {
            Ok(d) => {
                d.await.unwrap();
                appended += 1;
            }
            Err((SpoolError::Full { .. }, batch)) => break batch,
            Err((e, _)) => panic!("{e}"),
        }
    };
    assert!(spool.stats().bytes <= 4 * SEGMENT + SEGMENT_HEADER_BYTES as u64 * 5);
    // append() waits instead of failing, and nothing is lost while it waits.
    let mut waiting = Box::pin(app.append(full_batch));
    assert!(
        (&mut waiting).now_or_never().is_none(),
        "append did not wait on a full spool"
    );
    let got = read(&mut reader, appended).await;
    reader.ack(got[appended - 1].position).await.unwrap();
    waiting.await.unwrap().await.unwrap();
    let got = read(&mut reader, 1).await;
    assert_eq!(numbers(&got), [appended]);
}

#[tokio::test]
async fn records_and_batches_over_the_limits_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _reader) = Spool::open(settings(dir.path())).unwrap();
    let app = spool.appender();
    let mut b = app.batch();
    b.push(b"small").unwrap();
    assert!(matches!(
        b.push(&[0; 1025]),
        Err(SpoolError::RecordTooLarge {
            bytes: 1025,
            limit: 1024
        })
    ));
    assert!(b
        .push_with(|out| out.extend_from_slice(&[1; 2000]))
        .is_err());
    assert_eq!(
        (b.len(), b.frame_bytes()),
        (1, (FRAME_HEADER_BYTES + 5) as u64)
    );
    let mut huge = app.batch();
    while huge.frame_bytes() <= 1024 * 1024 {
        huge.push(&[7; 1000]).unwrap();
    }
    assert!(matches!(
        app.append(huge).await,
        Err(SpoolError::BatchTooLarge { .. })
    ));
}

#[tokio::test]
async fn acks_before_an_earlier_ack_are_ignored_and_past_the_read_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, mut reader) = Spool::open(settings(dir.path())).unwrap();
    append(&spool.appender(), 0..10).await;
    let got = read(&mut reader, 5).await;
    reader.ack(got[3].position).await.unwrap();
    reader.ack(got[1].position).await.unwrap();
    assert_eq!(spool.stats().records, 6);
    let beyond = Position {
        seq: 7,
        ..got[4].position
    };
    assert!(matches!(
        reader.ack(beyond).await,
        Err(SpoolError::AckBeyondRead { seq: 7, read: 5 })
    ));
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Spool::open(settings(dir.path())).unwrap();
    assert!(matches!(
        Spool::open(settings(dir.path())),
        Err(SpoolError::Locked { .. })
    ));
}

#[test]
fn inconsistent_settings_are_refused_with_the_limit_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = [
        SpoolSettings {
            segment_bytes: 1000,
            ..settings(dir.path())
        },
        SpoolSettings {
            max_bytes: SEGMENT,
            ..settings(dir.path())
        },
        SpoolSettings {
            dir: "".into(),
            ..settings(dir.path())
        },
    ];
    for (s, word) in bad.into_iter().zip(["segment_bytes", "max_bytes", "dir"]) {
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains(word), "{e}");
    }
    SpoolSettings::new(dir.path()).validate().unwrap();
}

#[test]
fn writer_rollback_reuses_the_sequence_numbers_and_leaves_no_bytes() {
    writer_rollback(false);
    writer_rollback(true);
}

fn writer_rollback(direct: bool) {
    let dir = if direct {
        match super::direct::direct_tempdir() {
            Some(dir) => dir,
            None => return,
        }
    } else {
        tempfile::tempdir().unwrap()
    };
    let dir_file = std::fs::File::open(dir.path()).unwrap();
    let mut w = writer::WriterCore::open(dir.path(), dir_file, SEGMENT, direct, None, 0).unwrap();
    let mut b = Batch::with_buffer(1024, Vec::new());
    for i in 0..30 {
        b.push(&rec(i)).unwrap();
    }
    w.append(&mut b.clone(), 1).unwrap();
    let done = w.commit().unwrap();
    assert_eq!(done.durable_next, 30);
    // Lengths without a direct write's padding: a rollback cuts back to the last
    // durable record.
    let durable: Vec<(std::path::PathBuf, u64)> = segment_files(dir.path())
        .into_iter()
        .map(|p| {
            let len = unpadded_len(&p);
            (p, len)
        })
        .collect();
    // A round that spans a new segment, then fails: both undone.
    assert_eq!(w.append(&mut b.clone(), 2).unwrap().0, 30);
    assert!(segment_files(dir.path()).len() > durable.len());
    w.rollback();
    let after: Vec<(std::path::PathBuf, u64)> = segment_files(dir.path())
        .into_iter()
        .map(|p| {
            let len = std::fs::metadata(&p).unwrap().len();
            assert!(
                len <= unpadded_len(&p).next_multiple_of(4096),
                "{} not cut back",
                p.display()
            );
            let len = unpadded_len(&p);
            (p, len)
        })
        .collect();
    assert_eq!(after, durable, "direct: {direct}");
    assert_eq!(
        w.append(&mut b, 3).unwrap().0,
        30,
        "sequence numbers reused"
    );
    assert_eq!(w.commit().unwrap().durable_next, 60);
}

/// Closes a spool so that it can be opened again: the directory stays locked while the
/// reader or the writer thread lives.
async fn shut(spool: Spool, reader: Reader) {
    drop(reader);
    spool.close().await;
}

/// Writes a spool of `n` records (none acknowledged) and closes it.
async fn fill(dir: &Path, n: usize, settings: fn(&Path) -> SpoolSettings) {
    let (spool, reader) = Spool::open(settings(dir)).unwrap();
    let app = spool.appender();
    for start in (0..n).step_by(7) {
        append(&app, start..(start + 7).min(n)).await;
    }
    drop(app);
    shut(spool, reader).await;
}

#[tokio::test]
async fn a_torn_tail_is_cut_with_its_bytes_counted_and_appends_continue() {
    torn_tail(settings).await;
    torn_tail(buffered).await;
}

async fn torn_tail(settings: fn(&Path) -> SpoolSettings) {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 12, settings).await;
    let last = segment_files(dir.path()).pop().unwrap();
    let mut torn = Vec::new();
    encode(12, 0, &rec(12), &mut torn);
    torn.truncate(FRAME_HEADER_BYTES + 5);
    // The torn record starts where the last whole one ends (past any padding).
    let len = unpadded_len(&last);
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.truncate(len as usize);
    bytes.extend_from_slice(&torn);
    std::fs::write(&last, &bytes).unwrap();

    let (spool, mut reader) = Spool::open(settings(dir.path())).unwrap();
    assert_eq!(spool.recovery().torn_bytes, torn.len() as u64);
    assert_eq!(spool.stats().torn_bytes, torn.len() as u64);
    assert_eq!(
        std::fs::metadata(&last).unwrap().len(),
        len,
        "tail not cut back"
    );
    append(&spool.appender(), 12..14).await;
    assert_eq!(
        numbers(&read(&mut reader, 14).await),
        (0..14).collect::<Vec<_>>()
    );
    assert_eq!(
        spool.stats().corrupt,
        0,
        "the cut tail is not read as corruption"
    );
    assert_drained(spool, &mut reader).await;
}

#[tokio::test]
async fn a_corrupt_record_in_the_middle_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 60, settings).await;
    let files = segment_files(dir.path());
    let victim = &files[1];
    let mut bytes = std::fs::read(victim).unwrap();
    // Flip a payload byte of the segment's second record.
    let first_len =
        FRAME_HEADER_BYTES + super::frame::declared_len(&bytes[SEGMENT_HEADER_BYTES..]) as usize;
    bytes[SEGMENT_HEADER_BYTES + first_len + FRAME_HEADER_BYTES + 3] ^= 0x20;
    std::fs::write(victim, &bytes).unwrap();

    let (spool, mut reader) = Spool::open(settings(dir.path())).unwrap();
    let got = read(&mut reader, 59).await;
    let got = numbers(&got);
    let lost: Vec<usize> = (0..60).filter(|i| !got.contains(i)).collect();
    assert_eq!(
        lost.len(),
        1,
        "exactly the corrupt record is lost: {lost:?}"
    );
    let stats = spool.stats();
    assert_eq!(stats.corrupt, 1);
    assert_eq!(
        stats.corrupt_bytes,
        (FRAME_HEADER_BYTES + rec(lost[0]).len()) as u64
    );
    assert_drained(spool, &mut reader).await;
}

#[tokio::test]
async fn empty_segments_missing_position_and_stray_files_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 30, settings).await;
    {
        // Acknowledge the first ten, so that losing the position means a replay.
        let (spool, mut reader) = Spool::open(settings(dir.path())).unwrap();
        let got = read(&mut reader, 10).await;
        reader.ack(got[9].position).await.unwrap();
        shut(spool, reader).await;
    }
    let files = segment_files(dir.path());
    let p = dir.path();
    std::fs::remove_file(p.join(position::POSITION_FILE)).unwrap();
    std::fs::write(p.join("00000000000000000999.seg"), b"").unwrap();
    std::fs::write(p.join("notes.txt"), b"left by an operator").unwrap();
    std::fs::create_dir(p.join("00000000000000000003.seg")).unwrap();
    let mut noise = vec![0u8; 5000];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    // Random bytes under a segment's name, between two real segments.
    let between = files[0].file_name().unwrap().to_str().unwrap()[..20]
        .parse::<u64>()
        .unwrap()
        + 1;
    std::fs::write(p.join(format!("{between:020}.seg")), &noise).unwrap();

    let (spool, mut reader) = Spool::open(settings(dir.path())).unwrap();
    let r = spool.recovery().clone();
    assert!(!r.position_found);
    assert_eq!(r.removed_empty, 1);
    assert_eq!(r.unknown_files.len(), 2, "{:?}", r.unknown_files);
    assert!(!p.join("00000000000000000999.seg").exists());
    // Everything still there is replayed: the ten acknowledged ones again (duplicates,
    // which ids make harmless), none lost.
    let got = numbers(&read(&mut reader, 30).await);
    assert_eq!(got, (0..30).collect::<Vec<_>>());
    let stats = spool.stats();
    assert_eq!(stats.corrupt, 1, "the random segment is one corrupt region");
    assert!(
        stats.corrupt_bytes >= 5000 - SEGMENT_HEADER_BYTES as u64,
        "{stats:?}"
    );
    assert_drained(spool, &mut reader).await;
    assert!(p.join("notes.txt").exists(), "unknown files are left alone");
}

#[tokio::test]
async fn the_oldest_record_time_follows_the_acks() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, mut reader) = Spool::open(settings(dir.path())).unwrap();
    assert_eq!(spool.stats().oldest_append_ms, None);
    append(&spool.appender(), 0..3).await;
    let first = spool
        .stats()
        .oldest_append_ms
        .expect("set by the first commit");
    let got = read(&mut reader, 3).await;
    assert_eq!(first, got[0].appended_ms);
    reader.ack(got[0].position).await.unwrap();
    assert_eq!(spool.stats().oldest_append_ms, Some(got[1].appended_ms));
    reader.ack(got[2].position).await.unwrap();
    assert_eq!(spool.stats().oldest_append_ms, None);
    assert_eq!(
        spool.stats().oldest_age(std::time::SystemTime::now()),
        Duration::ZERO
    );
}

#[tokio::test]
async fn concurrent_appenders_each_get_their_records_back_once() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, mut reader) = Spool::open(settings(dir.path())).unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let app = spool.appender();
            tokio::spawn(async move {
                for k in 0..10 {
                    let start = t * 1000 + k * 10;
                    append(&app, start..start + 10).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let got = numbers(&read(&mut reader, 800).await);
    // Each appender's records in its own order, all of them, once.
    for t in 0..8 {
        let mine: Vec<usize> = got.iter().copied().filter(|i| i / 1000 == t).collect();
        assert_eq!(
            mine,
            (t * 1000..t * 1000 + 100).collect::<Vec<_>>(),
            "appender {t}"
        );
    }
    assert_drained(spool, &mut reader).await;
}

#[tokio::test]
async fn a_reopened_spool_replays_every_record_of_the_segment_being_written() {
    reopened_replays(settings).await;
    reopened_replays(buffered).await;
}

async fn reopened_replays(settings: fn(&Path) -> SpoolSettings) {
    // The open reads one record ahead (for the oldest-record time); the rest of the
    // segment, already buffered, must follow.
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 5, settings).await;
    assert_eq!(segment_files(dir.path()).len(), 1);
    let (spool, mut reader) = Spool::open(settings(dir.path())).unwrap();
    assert_eq!(
        numbers(&read(&mut reader, 5).await),
        (0..5).collect::<Vec<_>>()
    );
    assert_drained(spool, &mut reader).await;
}

/// Appends records `range` as one batch with their numbers attached (the fast path's
/// form of them).
async fn append_attached(app: &Appender, range: std::ops::Range<usize>) -> Appended {
    let mut b = app.batch();
    for i in range.clone() {
        b.push(&rec(i)).unwrap();
    }
    b.attach(Box::new(range.collect::<Vec<usize>>()));
    app.append(b).await.unwrap().await.unwrap()
}

/// What one `next` handed out: the record numbers, through where, and from memory or not.
fn handed_out(read: Read) -> (Vec<usize>, Option<Position>, bool) {
    match read {
        Read::Disk(records) => (numbers(&records), records.last().map(|r| r.position), false),
        Read::Memory(h) => {
            let n = *h
                .attachment
                .downcast::<Vec<usize>>()
                .expect("our attachment");
            assert_eq!(n.len(), h.records, "records of a batch from memory");
            assert_eq!(n.first().map(|&i| i as u64), Some(h.first_seq));
            (n, Some(h.through), true)
        }
    }
}

async fn next(reader: &mut Reader, max: usize) -> (Vec<usize>, Option<Position>, bool) {
    let read = tokio::time::timeout(Duration::from_secs(20), reader.next(max, usize::MAX))
        .await
        .expect("a durable batch comes out of next()")
        .unwrap();
    handed_out(read)
}

#[tokio::test]
async fn a_caught_up_reader_is_handed_attached_batches_from_memory_and_acks_them_like_reads() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (spool, mut reader) = Spool::open(settings(dir.path())).unwrap();
        let app = spool.appender();
        append_attached(&app, 0..5).await;
        append_attached(&app, 5..9).await;
        let (a, _, memory_a) = next(&mut reader, 100).await;
        let (b, through, memory_b) = next(&mut reader, 100).await;
        assert_eq!((a, b), ((0..5).collect(), (5..9).collect()));
        assert!(memory_a && memory_b, "both batches came from memory");
        let stats = spool.stats();
        assert_eq!((stats.read, stats.from_memory, stats.records), (9, 9, 9));
        reader.ack(through.unwrap()).await.unwrap();
        assert_eq!(spool.stats().records, 0);
        // Then records without an attachment come from disk, after the batches.
        append(&app, 9..12).await;
        let (c, _, memory_c) = next(&mut reader, 100).await;
        assert_eq!((c, memory_c), ((9..12).collect(), false));
        drop(app);
        shut(spool, reader).await;
    }
    // The saved position is where the memory batches ended: 9..12 is all a reopen replays.
    let (spool, mut reader) = Spool::open(settings(dir.path())).unwrap();
    assert_eq!(spool.recovery().records, 3);
    assert_eq!(
        numbers(&read(&mut reader, 3).await),
        (9..12).collect::<Vec<_>>()
    );
    assert_drained(spool, &mut reader).await;
}

#[tokio::test]
async fn a_reader_behind_reads_from_disk_and_is_handed_from_memory_again_once_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    // Room in memory (half of `memory_bytes` is the fast path's) for the largest of the
    // five batches, but not for the first two together: the rest of a burst goes to
    // disk only.
    let size = |b: usize| -> usize {
        (b * 5..b * 5 + 5)
            .map(|i| rec(i).len() + frame::FRAME_HEADER_BYTES)
            .sum()
    };
    let room = (0..5).map(size).max().unwrap();
    assert!(size(0) + size(1) > room);
    let s = SpoolSettings {
        memory_bytes: 2 * room as u64,
        ..settings(dir.path())
    };
    let (spool, mut reader) = Spool::open(s).unwrap();
    let app = spool.appender();
    for b in 0..4 {
        append_attached(&app, b * 5..b * 5 + 5).await;
    }
    let mut got = Vec::new();
    let (first, _, memory) = next(&mut reader, 100).await;
    assert!(memory, "the first batch of the burst was kept");
    got.extend(first);
    while got.len() < 20 {
        let (n, _, memory) = next(&mut reader, 7).await;
        assert!(!memory, "behind: records {n:?} should come from disk");
        got.extend(n);
    }
    // Caught up: the next batch is handed from memory again.
    append_attached(&app, 20..25).await;
    let (last, _, memory) = next(&mut reader, 100).await;
    assert!(memory, "caught up again, the fast path resumes");
    got.extend(last);
    assert_eq!(
        got,
        (0..25).collect::<Vec<_>>(),
        "each record once, in order"
    );
    assert_eq!(spool.stats().from_memory, 10);
    drop(app);
    assert_drained(spool, &mut reader).await;
}

#[tokio::test]
async fn a_rewind_hands_out_again_everything_after_the_saved_position_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, mut reader) = Spool::open(settings(dir.path())).unwrap();
    let app = spool.appender();
    append_attached(&app, 0..4).await;
    let (_, through, _) = next(&mut reader, 100).await;
    reader.ack(through.unwrap()).await.unwrap();
    append_attached(&app, 4..8).await;
    append_attached(&app, 8..10).await;
    assert_eq!(next(&mut reader, 100).await.0, (4..8).collect::<Vec<_>>());
    // The consumer lost 4..8: back to the position after 3.
    reader.rewind().await.unwrap();
    let mut again = Vec::new();
    while again.len() < 6 {
        again.extend(next(&mut reader, 100).await.0);
    }
    assert_eq!(again, (4..10).collect::<Vec<_>>());
    drop(app);
    assert_drained(spool, &mut reader).await;
}

/// Random interleavings of appends (with and without attachments, batches of random
/// sizes), reads of random sizes, acks, rewinds and reopens, against a model: the
/// records handed out since the last rewind or reopen are exactly those after the last
/// ack, in order, each once, whichever path each came by, and both paths are taken.
#[tokio::test]
async fn any_interleaving_hands_out_each_record_once_in_order_by_memory_or_disk() {
    let (mut from_memory, mut from_disk) = (0, 0);
    for seed in 1..=12u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n) as usize
        };
        let s = SpoolSettings {
            memory_bytes: [0, 4000, 20_000, 1 << 20][rand(4)] as u64,
            ..settings(dir.path())
        };
        let (mut spool, mut reader) = Spool::open(s.clone()).unwrap();
        let mut app = spool.appender();
        // appended: records durable; acked: records acknowledged (a prefix); handed:
        // what came out since the last ack point was re-established.
        let (mut appended, mut acked) = (0usize, 0usize);
        let mut handed: Vec<usize> = Vec::new();
        let mut last: Option<Position> = None;
        for _ in 0..150 {
            match rand(10) {
                0..=3 => {
                    let n = 1 + rand(12);
                    if rand(4) == 0 {
                        append(&app, appended..appended + n).await;
                    } else {
                        append_attached(&app, appended..appended + n).await;
                    }
                    appended += n;
                }
                4..=6 if acked + handed.len() < appended => {
                    let (n, through, memory) = next(&mut reader, 1 + rand(15)).await;
                    let want = acked + handed.len();
                    assert_eq!(
                        n,
                        (want..want + n.len()).collect::<Vec<_>>(),
                        "seed {seed}: out of order or twice"
                    );
                    if memory {
                        from_memory += n.len();
                    } else {
                        from_disk += n.len();
                    }
                    handed.extend(n);
                    last = through;
                }
                7 if !handed.is_empty() => {
                    reader.ack(last.unwrap()).await.unwrap();
                    acked += handed.len();
                    handed.clear();
                }
                8 => {
                    reader.rewind().await.unwrap();
                    handed.clear();
                }
                9 if rand(3) == 0 => {
                    drop(app);
                    shut(spool, reader).await;
                    (spool, reader) = Spool::open(s.clone()).unwrap();
                    app = spool.appender();
                    handed.clear();
                }
                _ => {}
            }
        }
        while acked + handed.len() < appended {
            let (n, through, _) = next(&mut reader, 64).await;
            let want = acked + handed.len();
            assert_eq!(n, (want..want + n.len()).collect::<Vec<_>>(), "seed {seed}");
            handed.extend(n);
            last = through;
        }
        if let Some(p) = last.filter(|_| !handed.is_empty()) {
            reader.ack(p).await.unwrap();
        }
        assert_eq!(
            spool.stats().records,
            0,
            "seed {seed}: everything acknowledged"
        );
        drop(app);
        assert_drained(spool, &mut reader).await;
    }
    assert!(
        from_memory > 0 && from_disk > 0,
        "both paths taken: {from_memory} from memory, {from_disk} from disk"
    );
}

/// Record `i` pushed as a head in the batch and a document beside it: its first 9
/// bytes, then the rest.
fn push_split(b: &mut Batch, i: usize) {
    let r = rec(i);
    let (head, doc) = r.split_at(9);
    b.push_with_doc(
        |out| out.extend_from_slice(head),
        Bytes::copy_from_slice(doc),
    )
    .unwrap();
}

#[tokio::test]
async fn records_written_beside_their_documents_read_back_whole_across_segments() {
    // Through the page cache, the vectored write; direct, the aligned buffer filling
    // and writing its full blocks mid-round.
    beside_their_documents(buffered).await;
    beside_their_documents(settings).await;
}

async fn beside_their_documents(settings: fn(&Path) -> SpoolSettings) {
    let dir = tempfile::tempdir().unwrap();
    // Segments of 1 MiB: runs long enough for the vectored write (over its 256 KiB
    // threshold and over IOV_MAX slices) and a rotation inside the batch.
    let s = SpoolSettings {
        max_bytes: 16 * 1024 * 1024,
        segment_bytes: 1024 * 1024,
        ..settings(dir.path())
    };
    let n = 8000;
    {
        let (spool, mut reader) = Spool::open(s.clone()).unwrap();
        let app = spool.appender();
        let mut b = app.batch();
        for i in 0..n {
            // Mostly split records, some whole ones between them: both kinds of slice.
            if i % 5 == 4 {
                b.push(&rec(i)).unwrap();
            } else {
                push_split(&mut b, i);
            }
        }
        let bytes = b.frame_bytes();
        assert!(bytes > 1024 * 1024, "the batch must span two segments");
        app.append(b).await.unwrap().await.unwrap();
        // A small batch after it goes through the gathering buffer.
        let mut small = app.batch();
        push_split(&mut small, n);
        app.append(small).await.unwrap().await.unwrap();
        assert_eq!(
            numbers(&read(&mut reader, n + 1).await),
            (0..=n).collect::<Vec<_>>()
        );
        assert!(spool.stats().segments >= 2, "{:?}", spool.stats());
        drop(app);
        shut(spool, reader).await;
    }
    // Reopened, every record is replayed from the files: each frame's checksum held.
    let (spool, mut reader) = Spool::open(s).unwrap();
    assert_eq!(
        numbers(&read(&mut reader, n + 1).await),
        (0..=n).collect::<Vec<_>>()
    );
    assert_eq!((spool.stats().corrupt, spool.stats().torn_bytes), (0, 0));
    assert_drained(spool, &mut reader).await;
}

#[test]
fn a_record_with_its_document_beside_it_is_refused_whole_over_the_limit() {
    let mut b = Batch::with_buffer(10, Vec::new());
    let refused = b.push_with_doc(
        |out| out.extend_from_slice(b"12345"),
        Bytes::from_static(b"678901"),
    );
    assert!(
        matches!(
            refused,
            Err(SpoolError::RecordTooLarge {
                bytes: 11,
                limit: 10
            })
        ),
        "{refused:?}"
    );
    assert_eq!((b.len(), b.frame_bytes()), (0, 0), "nothing of it stays");
    b.push_with_doc(
        |out| out.extend_from_slice(b"12345"),
        Bytes::from_static(b"67890"),
    )
    .unwrap();
    assert_eq!(
        (b.len(), b.frame_bytes()),
        (1, (FRAME_HEADER_BYTES + 10) as u64)
    );
}
