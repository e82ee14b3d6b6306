#!/usr/bin/env python3
"""Writes proto-fixtures/invalid/ and proto-fixtures/payload/: byte streams a server
must refuse (or, for payload/, accept with dead letters), each next to what lumberd
must answer. Python 3 stdlib only; deterministic (fixed seeds, fixed zlib levels), so a
re-run rewrites the same bytes.

    python3 proto-fixtures/invalid/generate.py                # write every fixture
    python3 proto-fixtures/invalid/generate.py --capture-tls  # also re-capture the ClientHello

invalid/<name>.expect.json:
  error_kind     ProtocolError::kind() of the first error (src/protocol/mod.rs)
  acked_windows  last_seq of every window completed before the error, in order
  limits         overrides of Limits::default() for this stream (optional)
payload/<name>.expect.json:
  windows        every window's version (protocol number), count and last_seq
  events         the payloads that are JSON objects, in order, as JSON values
  dead_letters   how many payloads the pipeline must turn into dead letters

tls-client-hello.bin is the one captured file: the first TLS record Python's ssl module
(OpenSSL) sends when it connects to a plain TCP listener. Its random, session id and
key shares differ on every capture, so it is stored as captured and only rewritten with
--capture-tls.
"""

import json
import os
import random
import socket
import ssl
import struct
import sys
import threading
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
PAYLOAD_DIR = os.path.join(os.path.dirname(HERE), "payload")


# ---- frame builders (docs/PROTOCOL.md "Frames") --------------------------------------

def W(n, version=b"2"):
    return version + b"W" + struct.pack(">I", n)


def J(seq, payload, version=b"2"):
    if isinstance(payload, str):
        payload = payload.encode()
    return version + b"J" + struct.pack(">II", seq, len(payload)) + payload


def C(body, level=3, version=b"2"):
    """A C frame holding `body` (raw frame bytes) as a zlib stream."""
    z = zlib.compress(body, level)
    return C_raw(z, version)


def C_raw(compressed, version=b"2"):
    return version + b"C" + struct.pack(">I", len(compressed)) + compressed


def D(seq, pairs, version=b"1"):
    out = version + b"D" + struct.pack(">II", seq, len(pairs))
    for k, v in pairs:
        k, v = k.encode(), v.encode()
        out += struct.pack(">I", len(k)) + k + struct.pack(">I", len(v)) + v
    return out


def event(i, message=None):
    return json.dumps(
        {
            "@timestamp": "2025-04-05T10:23:%02d.000Z" % (i % 60),
            "message": message or "invalid-fixture event %d" % i,
            "host": {"name": "fixture"},
        },
        separators=(",", ":"),
    )


def good_window(first_seq, n, compressed=False):
    frames = b"".join(J(first_seq + i, event(first_seq + i)) for i in range(n))
    return W(n) + (C(frames) if compressed else frames)


# ---- invalid/ ------------------------------------------------------------------------

def invalid_cases():
    cases = []

    def case(name, data, kind, acked, description, limits=None):
        cases.append((name, data, kind, acked, description, limits))

    case(
        "http-get",
        b"GET /healthz HTTP/1.1\r\nHost: lumberd:5044\r\nUser-Agent: kube-probe/1.29\r\n"
        b"Accept: */*\r\nConnection: close\r\n\r\n",
        "http_request",
        [],
        "An HTTP health check sent to the Beats port (docs/PROTOCOL.md rule 7).",
    )

    rng = random.Random(20250405)
    noise = bytes(rng.randrange(256) for _ in range(512))
    # The first byte decides the error; this seed's is none of '1', '2', 0x16, GPHODC.
    assert noise[0] not in b"12\x16GPHODC", noise[0]
    case(
        "random-bytes",
        noise,
        "bad_version",
        [],
        "512 bytes from random.Random(20250405); first byte 0x%02x is no version byte." % noise[0],
    )

    whole = good_window(1, 3)
    cut = len(W(3)) + len(J(1, event(1))) + 10 + 7  # header + 7 payload bytes of J seq 2
    case(
        "truncated-inside-json-frame",
        whole[:cut],
        "truncated",
        [],
        "W 3, J 1, then J 2 cut 7 bytes into its payload: the stream ends inside a frame.",
    )

    case(
        "truncated-between-frames",
        good_window(1, 1) + good_window(2, 3)[: len(W(3)) + len(J(2, event(2)))],
        "truncated_window",
        [1],
        "A complete window (ACK 1), then W 3 and only one J: the stream ends between frames "
        "inside a window.",
    )

    comp = good_window(1, 4, compressed=True)
    case(
        "truncated-compressed-frame",
        comp[: len(W(4)) + 6 + (len(comp) - len(W(4)) - 6) // 2],
        "truncated",
        [],
        "W 4 and a C frame cut halfway through its zlib bytes.",
    )

    case(
        "oversized-json-length",
        W(1) + b"2J" + struct.pack(">II", 1, 0xFFFFFFF0) + b"{}",
        "frame_too_large",
        [],
        "W 1, then a J frame announcing 0xFFFFFFF0 payload bytes: refused from its header "
        "(docs/PROTOCOL.md rule 6).",
    )

    case(
        "oversized-compressed-length",
        good_window(1, 2) + W(1) + b"2C" + struct.pack(">I", 0x7FFFFFFF) + b"\x78\x9c",
        "frame_too_large",
        [2],
        "A good window (ACK 2), then W 1 and a C frame announcing 0x7FFFFFFF compressed bytes.",
    )

    case(
        "oversized-v1-data-frame",
        W(1, b"1") + b"1D" + struct.pack(">II", 1, 0x10000000),
        "frame_too_large",
        [],
        "v1: W 1, then a D frame announcing 2^28 key/value pairs (at least 2 GiB of lengths).",
    )

    # 1 MiB of zeros as one J payload compresses to about 1 KiB; the limit is 64 KiB.
    bomb_body = b"2J" + struct.pack(">II", 1, 1 << 20) + bytes(1 << 20)
    case(
        "zlib-bomb",
        W(1) + C(bomb_body, level=9),
        "inflated_too_large",
        [],
        "W 1, then a 1 KiB C frame inflating to 1 MiB + 10 bytes (one J frame of zeros), "
        "with max_inflated_bytes 65536.",
        {"max_inflated_bytes": 65536},
    )

    case(
        "compressed-inside-compressed",
        W(2) + C(C(J(1, event(1)) + J(2, event(2)))),
        "nested_compressed",
        [],
        "W 2, then a C frame whose inflated bytes are another C frame (docs/PROTOCOL.md rule 1).",
    )

    case(
        "premature-window",
        W(3) + J(1, event(1)) + W(3) + J(1, event(1)),
        "premature_window",
        [],
        "W 3, one J, then W again before the other two data frames (docs/PROTOCOL.md rule 2).",
    )

    case(
        "window-too-large",
        W(65) + J(1, event(1)),
        "window_too_large",
        [],
        "W 65 with max_window_events 64.",
        {"max_window_events": 64},
    )

    case(
        "empty-window",
        good_window(1, 1) + W(0) + good_window(1, 1),
        "empty_window",
        [1],
        "A good window (ACK 1), then W 0.",
    )

    case(
        "data-outside-window",
        J(1, event(1)) + W(1) + J(2, event(2)),
        "data_outside_window",
        [],
        "A J frame before any W.",
    )

    case(
        "data-after-complete-window",
        good_window(1, 2) + J(3, event(3)),
        "data_outside_window",
        [2],
        "W 2 with its two J frames (ACK 2), then a third J frame without a new W.",
    )

    case(
        "unknown-frame-type",
        good_window(1, 1) + b"2X" + struct.pack(">I", 4) + b"abcd",
        "unknown_frame_type",
        [1],
        "A good window (ACK 1), then frame type 'X'.",
    )

    case(
        "ack-frame-from-client",
        W(1) + b"2A" + struct.pack(">I", 1),
        "unknown_frame_type",
        [],
        "W 1, then an ACK frame: A is server-to-client only.",
    )

    case(
        "bad-version-mid-stream",
        good_window(1, 2) + good_window(3, 2, compressed=True) + b"3W" + struct.pack(">I", 1)
        + J(5, event(5)),
        "bad_version",
        [2, 4],
        "Two good windows (ACK 2, ACK 4, the second compressed), then a W frame with "
        "version byte '3'.",
    )

    case(
        "bad-version-inside-compressed",
        W(2) + C(J(1, event(1)) + b"3J" + struct.pack(">II", 2, 2) + b"{}"),
        "bad_version",
        [],
        "W 2, then a C frame whose second inner frame has version byte '3'.",
    )

    z = bytearray(zlib.compress(J(1, event(1)) + J(2, event(2)), 6))
    z[0], z[1] = 0x78, 0x9D  # header checksum (FCHECK) no longer divides 31
    case(
        "corrupt-zlib-header",
        good_window(1, 1) + W(2) + C_raw(bytes(z)),
        "zlib",
        [1],
        "A good window (ACK 1), then W 2 and a C frame whose zlib header fails its check.",
    )

    z = bytearray(zlib.compress(J(1, event(1)) + J(2, event(2)), 6))
    z[2] = 0x07  # first deflate block header: BTYPE 11, a reserved (invalid) block type
    case(
        "corrupt-deflate-block",
        W(2) + C_raw(bytes(z)),
        "zlib",
        [],
        "W 2, then a C frame whose first deflate block has the reserved block type 3.",
    )

    z = bytearray(zlib.compress(J(1, event(1)) + J(2, event(2)), 6))
    z[-1] ^= 0xFF  # Adler-32 trailer
    case(
        "zlib-checksum-mismatch",
        W(3) + C_raw(bytes(z)),
        "zlib",
        [],
        "W 3, then a C frame (J 1, J 2) whose Adler-32 trailer is wrong.",
    )

    raw = zlib.compressobj(6, zlib.DEFLATED, -15)  # wbits -15: no zlib header or trailer
    case(
        "raw-deflate-not-zlib",
        W(1) + C_raw(raw.compress(J(1, event(1))) + raw.flush()),
        "zlib",
        [],
        "W 1, then a C frame holding raw deflate (no zlib header): C is RFC 1950 zlib.",
    )

    z = zlib.compress(J(2, event(2)), 3)
    case(
        "trailing-bytes-after-zlib-end",
        good_window(1, 1) + W(2) + C_raw(z + b"GARBAGE!") + C(J(3, event(3))),
        "trailing_compressed",
        [1],
        "A good window (ACK 1), then W 2 and a C frame whose length covers its zlib stream "
        "plus 8 garbage bytes after the stream's end.",
    )

    case(
        "compressed-frame-ends-inside-a-frame",
        W(2) + C(J(1, event(1)) + J(2, event(2))[:-5]),
        "truncated_compressed",
        [],
        "W 2, then a C frame whose inflated bytes end 5 bytes short of the second J frame.",
    )
    return cases


# ---- payload/ ------------------------------------------------------------------------

def payload_cases():
    good = [event(i, "payload-fixture good %d" % i) for i in range(1, 5)]
    bad = [
        b"not json",
        b"[1,2]",
        b'{"message":"bad \xff\xfe utf-8"}',
        b"",
    ]
    # good, bad, good, bad, ...: dead letters between events in one window.
    payloads = []
    for g, b in zip(good, bad):
        payloads += [g.encode(), b]
    frames = b"".join(J(i + 1, p) for i, p in enumerate(payloads))
    n = len(payloads)
    expect = {
        "description": "",
        "windows": [{"version": 2, "count": n, "last_seq": n}],
        "events": [json.loads(g) for g in good],
        "dead_letters": len(bad),
    }
    out = []
    e = dict(expect, description="One window of 8 bare J frames: 4 JSON objects between "
             "'not json', '[1,2]', an object with invalid UTF-8 in a string, and an empty "
             "payload.")
    out.append(("mixed-bad-payloads-c0", W(n) + frames, e))
    e = dict(expect, description="The same 8 J frames inside one C frame (zlib level 3).")
    out.append(("mixed-bad-payloads-c3", W(n) + C(frames), e))

    scalars = [b"42", b'"a string"', b"null", b"{\"ok\":true}", b"{\"trailing\":1} x",
               b"{\"unclosed\":", b"[]", b'["2025-04-05T10:23:45Z"]']
    frames = b"".join(J(100 + i, p) for i, p in enumerate(scalars))
    out.append((
        "scalars-and-broken-objects",
        W(len(scalars)) + frames,
        {
            "description": "A continuous-sequence window (seq 100..107): JSON scalars, a "
            "trailing token after an object, an unclosed object and arrays (an empty one, "
            "one holding only a timestamp string) around one good object.",
            "windows": [{"version": 2, "count": len(scalars), "last_seq": 99 + len(scalars)}],
            "events": [{"ok": True}],
            "dead_letters": len(scalars) - 1,
        },
    ))
    return out


# ---- TLS capture ---------------------------------------------------------------------

def capture_client_hello():
    """The first record a TLS client (Python ssl, i.e. OpenSSL, TLS 1.2-1.3) sends."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    got = {}

    def serve():
        conn, _ = listener.accept()
        data = b""
        while len(data) < 5 or len(data) < 5 + struct.unpack(">H", data[3:5])[0]:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        got["hello"] = data
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["lumberjack"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            with ctx.wrap_socket(s, server_hostname="lumberd.example.internal"):
                pass
    except (ssl.SSLError, OSError):
        pass  # the listener closes after reading the ClientHello
    t.join()
    listener.close()
    hello = got["hello"]
    assert hello[0] == 0x16 and hello[5] == 0x01, "not a TLS handshake/ClientHello record"
    return hello


# ---- main ----------------------------------------------------------------------------

def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")


def main():
    tls = os.path.join(HERE, "tls-client-hello.bin")
    if "--capture-tls" in sys.argv or not os.path.exists(tls):
        hello = capture_client_hello()
        write(tls, hello)
        # Written with the capture only, so a plain re-run leaves both files as they are.
        write_json(os.path.join(HERE, "tls-client-hello.expect.json"), {
            "description": "Captured: the first TLS record (%d bytes, ClientHello, record "
            "version 0x%02x%02x) Python %s's ssl module (%s) sent to a plain TCP listener, "
            "as a Filebeat with ssl.enabled would on a plain port (docs/PROTOCOL.md rule 7)."
            % (len(hello), hello[1], hello[2], sys.version.split()[0], ssl.OPENSSL_VERSION),
            "error_kind": "tls_on_plain_port",
            "acked_windows": [],
        })

    for name, data, kind, acked, description, limits in invalid_cases():
        write(os.path.join(HERE, name + ".bin"), data)
        expect = {"description": description, "error_kind": kind, "acked_windows": acked}
        if limits:
            expect["limits"] = limits
        write_json(os.path.join(HERE, name + ".expect.json"), expect)

    os.makedirs(PAYLOAD_DIR, exist_ok=True)
    for name, data, expect in payload_cases():
        write(os.path.join(PAYLOAD_DIR, name + ".bin"), data)
        write_json(os.path.join(PAYLOAD_DIR, name + ".expect.json"), expect)


if __name__ == "__main__":
    main()
