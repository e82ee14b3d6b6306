//! `lumberd send`: ships the lines of log files to any Beats endpoint as Filebeat would,
//! and reports what was acknowledged. The smoke test a user runs against an endpoint.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::BytesMut;
use chrono::{SecondsFormat, Utc};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use crate::protocol::{encode_window, AckDecoder, Compression};

mod tls;
pub use self::tls::ClientTls;

#[derive(Debug, Clone)]
pub struct SendOptions {
    pub host: String,
    pub compression: Compression,
    pub window: usize,
    /// Filebeat's `timeout`: for the connect and for each ACK (any ACK restarts it).
    pub timeout: Duration,
    /// Connect over TLS with these settings; plain TCP when `None`.
    pub tls: Option<ClientTls>,
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SendReport {
    pub events: u64,
    pub windows: u64,
    pub keepalives: u64,
}

/// Sends every line of every file, one window at a time, waiting for each window's ACK.
/// An error says how much had been acknowledged before it.
pub async fn send(opts: &SendOptions) -> anyhow::Result<SendReport> {
    let stream = tokio::time::timeout(opts.timeout, TcpStream::connect(&opts.host))
        .await
        .with_context(|| format!("connecting to {}: timed out", opts.host))?
        .with_context(|| format!("connecting to {}", opts.host))?;
    stream.set_nodelay(true)?;
    let Some(tls) = &opts.tls else {
        return send_over(stream, opts).await;
    };
    let (config, name) = tls.config(&opts.host)?;
    let stream = tokio::time::timeout(
        opts.timeout,
        tokio_rustls::TlsConnector::from(config).connect(name.clone(), stream),
    )
    .await
    .with_context(|| format!("TLS handshake with {}: timed out", opts.host))?
    .with_context(|| {
        format!(
            "TLS handshake with {} (verifying the name {})",
            opts.host,
            name.to_str()
        )
    })?;
    send_over(stream, opts).await
}

/// The Beats exchange over an established (plain or TLS) stream.
async fn send_over<S>(stream: S, opts: &SendOptions) -> anyhow::Result<SendReport>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (read_half, mut write_half) = tokio::io::split(stream);
    let mut acks = FramedRead::new(read_half, AckDecoder);
    let mut report = SendReport::default();
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let mut wire = BytesMut::new();

    for path in &opts.files {
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut lines = LineReader {
            inner: std::io::BufReader::new(file),
            offset: 0,
        };
        loop {
            let mut events = Vec::with_capacity(opts.window);
            while events.len() < opts.window {
                let Some((offset, line)) = lines
                    .next()
                    .with_context(|| format!("reading {}", path.display()))?
                else {
                    break;
                };
                events.push(event(&line, &abs, offset, &host_name));
            }
            if events.is_empty() {
                break;
            }
            wire.clear();
            encode_window(1, &events, opts.compression, &mut wire);
            write_half
                .write_all(&wire)
                .await
                .with_context(|| progress("writing a window", &report))?;
            write_half
                .flush()
                .await
                .with_context(|| progress("writing a window", &report))?;
            wait_for_ack(&mut acks, events.len() as u32, opts.timeout, &mut report).await?;
            report.events += events.len() as u64;
            report.windows += 1;
        }
    }
    // A TLS stream sends close_notify here, so the server sees a clean end.
    let _ = write_half.shutdown().await;
    Ok(report)
}

fn progress(what: &str, r: &SendReport) -> String {
    format!(
        "{what} (acknowledged so far: {} events in {} windows)",
        r.events, r.windows
    )
}

/// Waits for the ACK of a window numbered 1..=n: ACK 0 is a keep-alive, ACK n completes
/// it, anything above n is a protocol violation (what Filebeat calls "invalid sequence").
async fn wait_for_ack<R: tokio::io::AsyncRead + Unpin>(
    acks: &mut FramedRead<R, AckDecoder>,
    n: u32,
    timeout: Duration,
    report: &mut SendReport,
) -> anyhow::Result<()> {
    loop {
        let next = tokio::time::timeout(timeout, acks.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!(progress(&format!("no ACK within {timeout:?}"), report))
            })?;
        match next {
            None => bail!(progress(
                "connection closed before the window was acknowledged",
                report
            )),
            Some(Err(e)) => bail!(progress(&format!("bad ACK: {e}"), report)),
            Some(Ok(ack)) if ack.seq == 0 => report.keepalives += 1,
            Some(Ok(ack)) if ack.seq == n => return Ok(()),
            Some(Ok(ack)) if ack.seq < n => {} // partial ACK: keep waiting, as Filebeat does
            Some(Ok(ack)) => bail!(progress(
                &format!("invalid sequence number {} > {n}", ack.seq),
                report
            )),
        }
    }
}

/// An event shaped like Filebeat's log input: the line in `message`, where it came from in
/// `log.file.path` and `log.offset`.
fn event(line: &[u8], path: &Path, offset: u64, host: &str) -> Vec<u8> {
    let doc = serde_json::json!({
        "@timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "message": String::from_utf8_lossy(line),
        "log": { "file": { "path": path.to_string_lossy() }, "offset": offset },
        "input": { "type": "log" },
        "host": { "name": host },
        "agent": { "type": "lumberd-send", "version": env!("CARGO_PKG_VERSION") },
    });
    serde_json::to_vec(&doc).expect("a json! value serialises")
}

struct LineReader<R> {
    inner: R,
    offset: u64,
}

impl<R: BufRead> LineReader<R> {
    /// The next line without its line ending, and the byte offset where it starts.
    fn next(&mut self) -> std::io::Result<Option<(u64, Vec<u8>)>> {
        let mut line = Vec::new();
        let n = self.inner.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(None);
        }
        let start = self.offset;
        self.offset += n as u64;
        if line.ends_with(b"\n") {
            line.pop();
            if line.ends_with(b"\r") {
                line.pop();
            }
        }
        Ok(Some((start, line)))
    }
}
