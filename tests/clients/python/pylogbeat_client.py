#!/usr/bin/env python3
"""Send K windows of N Filebeat-shaped events over ONE connection with pylogbeat.

pylogbeat (2.1.0) numbers the data frames of a connection with one running sequence
(window 1: 1..N, window 2: N+1..2N, ...) and PyLogBeatClient.send() returns only once
it has read an ACK equal to the last sequence number it sent. It has no overall
timeout of its own beyond the socket timeout given to the client, which applies to
each recv.

With -tls-ca the connection uses pylogbeat's own TLS support (Python's ssl module):
the server certificate is verified against the CA file (pylogbeat does not check the
host name), and -tls-cert/-tls-key present a client certificate.

Prints one JSON line on stdout; exits 0 only if every window was acknowledged.
"""

import argparse
import datetime as dt
import json
import socket
import sys
import time

import pylogbeat

ANCHORS = [
    dt.datetime(2025, 4, 5, 10, 23, 45, tzinfo=dt.timezone.utc),
    dt.datetime(2025, 4, 5, 23, 59, 59, 990000, tzinfo=dt.timezone.utc),
    dt.datetime(2025, 4, 6, 0, 0, 0, tzinfo=dt.timezone.utc),
    dt.datetime(2025, 4, 4, 18, 7, 3, 250000, tzinfo=dt.timezone.utc),
]

PROMPTS = [
    "你好，请介绍一下你自己",
    "用三句话解释什么是大语言模型",
    '写一首关于"秋天"的诗，\n要求押韵',
    "Translate to English: 今天天气很好 🌤️",
    "路径 C:\\models\\qwen 里有什么? <b>&amp;</b>",
    "",
]


def event(prefix, window, index, g):
    """The g-th event of the run (same scheme as the Go client's)."""
    ts = ANCHORS[g % len(ANCHORS)] + dt.timedelta(milliseconds=g)
    status, level, length = "success", "INFO", 100 + (g * 37) % 900
    if g % 7 == 3:
        status, level, length = "error", "ERROR", 0
    line = {
        "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "level": level,
        "request_id": f"req_{prefix}_{window}_{index}",
        "prompt": PROMPTS[g % len(PROMPTS)],
        "response_length": length,
        "inference_time_ms": 200 + (g * 53) % 2000,
        "status": status,
    }
    return {
        "@timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
        "message": json.dumps(line, ensure_ascii=False, separators=(",", ":")),
        "log": {"file": {"path": "/var/log/qwen/infer.log"}, "offset": g * 256},
        "host": {"name": "node-1"},
        "agent": {"type": "filebeat"},
        "ecs": {"version": "8.0.0"},
        "test_id": f"{prefix}-{window}-{index}",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-addr", "--addr", default="127.0.0.1:5044")
    ap.add_argument("-window", "--window", type=int, default=10)
    ap.add_argument("-windows", "--windows", type=int, default=3)
    ap.add_argument("-id", "--id", default="py")
    ap.add_argument("-timeout", "--timeout", type=float, default=30.0,
                    help="socket timeout in seconds (pylogbeat applies it to each recv/send)")
    ap.add_argument("-dump", "--dump", default="",
                    help="write every event sent, one JSON line each, to this file")
    ap.add_argument("-tls-ca", "--tls-ca", default="",
                    help="TLS: verify the server against these CA certificates (PEM)")
    ap.add_argument("-tls-cert", "--tls-cert", default="", help="TLS: client certificate (PEM)")
    ap.add_argument("-tls-key", "--tls-key", default="", help="TLS: client key (PEM)")
    args = ap.parse_args()

    host, _, port = args.addr.rpartition(":")
    batches = [[event(args.id, w, i, w * args.window + i) for i in range(args.window)]
               for w in range(args.windows)]
    ids = [e["test_id"] for b in batches for e in b]
    if args.dump:
        with open(args.dump, "w", encoding="utf-8") as f:
            for b in batches:
                for e in b:
                    # pylogbeat encodes with json.dumps(element) (ASCII escapes)
                    f.write(json.dumps(e) + "\n")

    res = {
        "client": "pylogbeat",
        "version": pylogbeat.__version__,
        "window": args.window,
        "windows": args.windows,
        "events_sent": 0,
        "events_acked": 0,
        "ids": ids,
    }
    err = None
    start = time.monotonic()
    tls = {}
    if args.tls_ca:
        tls = {"ssl_enable": True, "ssl_verify": True, "ca_certs": args.tls_ca,
               "certfile": args.tls_cert or None, "keyfile": args.tls_key or None}
    client = pylogbeat.PyLogBeatClient(host, int(port), timeout=args.timeout, **tls)
    try:
        client.connect()
        if tls:
            res["tls_version"] = client._socket.version()
            res["tls_cipher"] = client._socket.cipher()[0]
        for w, batch in enumerate(batches):
            res["events_sent"] += len(batch)
            client.send(batch)  # returns once the ACK of the last sequence number arrived
            res["events_acked"] += len(batch)
            res.setdefault("acks", []).append(client._last_ack)  # the ACK value it accepted
    except (OSError, socket.timeout, pylogbeat.ConnectionException, ValueError) as exc:  # ssl.SSLError is an OSError
        err = f"window {len(res.get('acks', []))}: {type(exc).__name__}: {exc}"
    finally:
        client.close()
    res["elapsed_ms"] = int((time.monotonic() - start) * 1000)
    if err:
        res["error"] = err
    print(json.dumps(res, ensure_ascii=False), flush=True)
    if err or res["events_acked"] != res["events_sent"]:
        print(f"pylogbeat_client: {err or 'not every event was acknowledged'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
