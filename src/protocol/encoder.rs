//! Frame encoding: ACKs for the server, windows for `lumberd send`, benches and tests.

use std::io::Write;

use bytes::{BufMut, BytesMut};
use flate2::write::ZlibEncoder;

use super::{Ack, TYPE_ACK, TYPE_COMPRESSED, TYPE_JSON, TYPE_WINDOW, VERSION_2};

/// zlib level for a window's `C` frame; `None` sends the `J` frames bare (go-lumber's
/// `CompressionLevel` 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Level(u32),
}

impl Compression {
    pub fn from_level(level: u32) -> Self {
        if level == 0 {
            Compression::None
        } else {
            Compression::Level(level.min(9))
        }
    }
}

/// `<version> 'A' u32 seq`.
pub fn encode_ack(ack: Ack, dst: &mut BytesMut) {
    dst.reserve(6);
    dst.put_u8(ack.version);
    dst.put_u8(TYPE_ACK);
    dst.put_u32(ack.seq);
}

/// Encodes one v2 window as Filebeat does: `W N`, then the `J` frames numbered from
/// `first_seq`, bare or inside one `C` frame.
pub fn encode_window<P: AsRef<[u8]>>(
    first_seq: u32,
    payloads: &[P],
    compression: Compression,
    dst: &mut BytesMut,
) {
    dst.put_u8(VERSION_2);
    dst.put_u8(TYPE_WINDOW);
    dst.put_u32(payloads.len() as u32);
    match compression {
        Compression::None => put_json_frames(first_seq, payloads, dst),
        Compression::Level(level) => {
            let mut frames = BytesMut::new();
            put_json_frames(first_seq, payloads, &mut frames);
            let mut z = ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
            // Writing to a Vec cannot fail.
            z.write_all(&frames).expect("zlib into memory");
            let compressed = z.finish().expect("zlib into memory");
            dst.put_u8(VERSION_2);
            dst.put_u8(TYPE_COMPRESSED);
            dst.put_u32(compressed.len() as u32);
            dst.put_slice(&compressed);
        }
    }
}

fn put_json_frames<P: AsRef<[u8]>>(first_seq: u32, payloads: &[P], dst: &mut BytesMut) {
    for (i, p) in payloads.iter().enumerate() {
        let p = p.as_ref();
        dst.reserve(10 + p.len());
        dst.put_u8(VERSION_2);
        dst.put_u8(TYPE_JSON);
        dst.put_u32(first_seq.wrapping_add(i as u32));
        dst.put_u32(p.len() as u32);
        dst.put_slice(p);
    }
}
