//! Frame encoding: ACKs for the server, windows for `lumberd send`, benches and tests,
//! any frame for tests that build streams the clients would not send.

use std::io::Write;

use bytes::{BufMut, BytesMut};
use flate2::write::ZlibEncoder;

use super::{
    Ack, DataFrame, Frame, Payload, TYPE_ACK, TYPE_COMPRESSED, TYPE_DATA, TYPE_JSON, TYPE_WINDOW,
    VERSION_2,
};

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

/// Encodes one frame as it is on the wire, whatever it says (an empty window, a `D`
/// frame of version `'2'`): for tests that feed streams no well-behaved client sends.
pub fn encode_frame(frame: &Frame, dst: &mut BytesMut) {
    match frame {
        Frame::Window { version, count } => {
            dst.put_u8(*version);
            dst.put_u8(TYPE_WINDOW);
            dst.put_u32(*count);
        }
        Frame::Data(DataFrame {
            version,
            seq,
            payload: Payload::Json(p),
        }) => put_json(*version, *seq, p, dst),
        Frame::Data(DataFrame {
            version,
            seq,
            payload: Payload::Pairs(pairs),
        }) => {
            dst.put_u8(*version);
            dst.put_u8(TYPE_DATA);
            dst.put_u32(*seq);
            dst.put_u32(pairs.len() as u32);
            for (k, v) in pairs {
                dst.put_u32(k.len() as u32);
                dst.put_slice(k);
                dst.put_u32(v.len() as u32);
                dst.put_slice(v);
            }
        }
    }
}

fn put_json_frames<P: AsRef<[u8]>>(first_seq: u32, payloads: &[P], dst: &mut BytesMut) {
    for (i, p) in payloads.iter().enumerate() {
        put_json(VERSION_2, first_seq.wrapping_add(i as u32), p.as_ref(), dst);
    }
}

fn put_json(version: u8, seq: u32, payload: &[u8], dst: &mut BytesMut) {
    dst.reserve(10 + payload.len());
    dst.put_u8(version);
    dst.put_u8(TYPE_JSON);
    dst.put_u32(seq);
    dst.put_u32(payload.len() as u32);
    dst.put_slice(payload);
}
