//! The decode-only floor for `benches/e2e.py`'s `floor-4conns` scenario: a Lumberjack v2
//! server that does what any receiver must (read, frame, inflate, check each event is
//! UTF-8 JSON with serde_json, ACK each window) and nothing else: no pipeline, no queue,
//! no output. lumberd's distance to it is what its own work costs.
//!
//! Built as an example (`cargo build --release --example floor`); it reads its listen
//! address from `LUMBERD_SERVER_LISTEN` like lumberd, so the bench drives both alike.
//! Without it, it binds a free port on 127.0.0.1 (never 5044, which a real lumberd or
//! Logstash on the machine may hold) and says which on stderr.

use bytes::BytesMut;
use lumberd::protocol::{encode_ack, Limits, Payload, Session, Step};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes per socket read, as lumberd's reader.
const READ_CHUNK: usize = 16 * 1024;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("LUMBERD_SERVER_LISTEN").unwrap_or_else(|_| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("floor: listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = serve(stream).await {
                eprintln!("floor: connection ended: {e}");
            }
        });
    }
}

async fn serve(mut stream: TcpStream) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut session = Session::new(Limits::DEFAULT);
    let mut ack = BytesMut::with_capacity(6);
    loop {
        let Some(step) = session.next()? else {
            let buf = session.buffer();
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            if stream.read_buf(buf).await? == 0 {
                session.end_of_stream();
            }
            continue;
        };
        match step {
            Step::Window { .. } => {}
            Step::Event { frame, completes } => {
                if let Payload::Json(payload) = &frame.payload {
                    // What every receiver must know of an event: it is UTF-8 JSON.
                    let text = simdutf8::basic::from_utf8(payload)?;
                    serde_json::from_str::<serde::de::IgnoredAny>(text)?;
                }
                if let Some(window) = completes {
                    encode_ack(window.ack(), &mut ack);
                    stream.write_all(&ack).await?;
                    ack.clear();
                }
            }
            Step::End { .. } => return Ok(()),
        }
    }
}
