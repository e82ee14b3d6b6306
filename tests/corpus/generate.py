#!/usr/bin/env python3
"""Writes tests/corpus/inputs.ndjson: the golden corpus's input events.

Each line is one complete Filebeat 8.11 event, as Filebeat sends it in a Lumberjack v2
`J` frame: the shipped log line is in `message`, and that line is one line of the
Qwen2.5-0.5B-Instruct inference service's own JSON log (or, on purpose, something
that is not). The cases cover what the default pipeline (json, date, mutate, index)
has to get right; tests/corpus/logstash_model.py derives expected.ndjson from them.

Also writes tests/corpus/cases.tsv (line number, category, case name) so that a
failing line of the corpus can be named.

Deterministic and stdlib only: no clock, no randomness, no hash-order dependence;
running it twice writes the same bytes. Run from anywhere:

    python3 tests/corpus/generate.py
"""

import hashlib
import json
import os
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
BEAT_VERSION = "8.11.3"

# Sentinel: a key passed with this value is removed from the record / event.
DROP = object()


def det_uuid(*parts):
    """A fixed, version-4-looking UUID derived from the parts."""
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def det_id(*parts):
    """A request id like req_k3x9a0qz1: base-36 of a hash of the parts."""
    n = int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:8], "big")
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    for _ in range(9):
        n, r = divmod(n, 36)
        out += digits[r]
    return "req_" + out


# --- the Filebeat side: nodes, files, offsets -------------------------------------

NODES = {
    # a node with a complete agent block and no filestream identity fields
    "gpu-node-1": {"agent": "full", "identity": None},
    # native file identity: log.file.inode + log.file.device_id
    "gpu-node-2": {"agent": "full", "identity": "native"},
    # an older enrolment whose agent block has no id / ephemeral_id
    "gpu-node-3": {"agent": "no-id", "identity": None},
    # fingerprint file identity
    "edge-node-4": {"agent": "full", "identity": "fingerprint"},
}

FILES = {
    "gpu-node-1": ["/var/log/qwen/inference.log", "/var/log/qwen/inference-1.log"],
    "gpu-node-2": ["/var/log/qwen/inference.log"],
    "gpu-node-3": ["/opt/qwen2.5/logs/serve.log"],
    "edge-node-4": ["/data/logs/qwen-0.5b/inference.ndjson"],
}

_offsets = Counter()  # (host, path) -> next offset, as Filebeat counts bytes


def agent_block(host):
    kind = NODES[host]["agent"]
    if kind == "full":
        return {
            "id": det_uuid("agent", host),
            "name": host,
            "type": "filebeat",
            "version": BEAT_VERSION,
            "ephemeral_id": det_uuid("ephemeral", host),
        }
    return {"name": host, "type": "filebeat", "version": BEAT_VERSION}


def log_block(host, path, advance):
    offset = _offsets[(host, path)]
    _offsets[(host, path)] += advance
    file = {"path": path}
    identity = NODES[host]["identity"]
    if identity == "native":
        file["inode"] = str(1835009 + FILES[host].index(path))
        file["device_id"] = "66306"
    elif identity == "fingerprint":
        file["fingerprint"] = hashlib.sha256(("fp:" + path).encode()).hexdigest()
    return {"offset": offset, "file": file}


BASE_READ = datetime(2025, 4, 5, 10, 23, 46, 789000, tzinfo=timezone.utc)


def fb_time(n):
    """Filebeat's @timestamp (read time) of the n-th event, always ms + Z."""
    t = BASE_READ + timedelta(milliseconds=1237 * n)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def svc_time(n):
    """The service's own timestamp of the n-th event (seconds, Z), a bit earlier."""
    t = BASE_READ + timedelta(milliseconds=1237 * n) - timedelta(seconds=1)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the inference service's log lines ----------------------------------------------

PROMPTS = [
    "你好，请介绍一下你自己",
    "Explain the difference between TCP and UDP in two sentences.",
    "用三句话解释什么是大语言模型",
    "Write a haiku about GPUs running out of memory",
    "把这句话翻译成英文：今天天气很好，适合出去散步。",
    "日本語で自己紹介してください",
    "What is 17 * 23? Answer with just the number.",
    "给我讲一个关于程序员的笑话",
]


def record(n, **fields):
    """One inference log record (a dict, key order as the service writes it)."""
    rec = {
        "timestamp": svc_time(n),
        "level": "INFO",
        "request_id": det_id("req", str(n)),
        "prompt": PROMPTS[n % len(PROMPTS)],
        "response_length": 40 + (n * 37) % 900,
        "inference_time_ms": 120 + (n * 53) % 2400,
        "status": "success",
    }
    for k, v in fields.items():
        k = {"at_timestamp": "@timestamp", "a_dot_b": "a.b"}.get(k, k)
        if v is DROP:
            rec.pop(k, None)
        else:
            rec[k] = v
    return rec


def py_line(rec):
    """The line as the service's Python logger writes it: json.dumps defaults
    (", " / ": " separators, ensure_ascii=True, so CJK and emoji become \\uXXXX
    escapes and surrogate pairs)."""
    return json.dumps(rec)


def compact_line(rec):
    """Compact, raw UTF-8: what a Go or Rust service would write."""
    return json.dumps(rec, ensure_ascii=False, separators=(",", ":"))


# --- events --------------------------------------------------------------------------

MISSING = object()  # "no message field at all"


class Corpus:
    def __init__(self):
        self.lines = []  # (category, name, serialized event)

    def add(self, category, name, message, *, host="gpu-node-1", path=None, ts=None,
            outer=None, encoding="utf8", agent=True):
        """Append one Filebeat event.

        message: the `message` value (usually a str; MISSING for no field; any JSON
        value otherwise). ts: the outer @timestamp (default: Filebeat's read time;
        DROP for none). outer: extra/overriding top-level fields (DROP removes).
        encoding: how the event's own JSON is written: "utf8" (raw UTF-8), "ascii"
        (every non-ASCII character as \\uXXXX, astral ones as surrogate pairs) or
        "slash" (raw UTF-8 with every / written as \\/)."""
        n = len(self.lines)
        path = path or FILES[host][n % len(FILES[host])]
        if isinstance(message, str):
            advance = len(message.encode("utf-8")) + 1
        else:
            advance = 64
        ev = {}
        if ts is not DROP:
            ev["@timestamp"] = fb_time(n) if ts is None else ts
        ev["@metadata"] = {"beat": "filebeat", "type": "_doc", "version": BEAT_VERSION}
        ev["log"] = log_block(host, path, advance)
        if message is not MISSING:
            ev["message"] = message
        ev["input"] = {"type": "filestream"}
        ev["ecs"] = {"version": "8.0.0"}
        ev["host"] = {"name": host}
        if agent:
            ev["agent"] = agent_block(host)
        for k, v in (outer or {}).items():
            if v is DROP:
                ev.pop(k, None)
            else:
                ev[k] = v
        if encoding == "ascii":
            text = json.dumps(ev, ensure_ascii=True, separators=(",", ":"))
        else:
            text = json.dumps(ev, ensure_ascii=False, separators=(",", ":"))
        if encoding == "slash":
            # '/' only ever occurs inside JSON strings, so this is a valid escape everywhere
            text = text.replace("/", "\\/")
        # U+2028/U+2029 are legal raw in JSON, but some line splitters treat them as
        # line breaks: keep the file one event per \n-line for every reader.
        text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        assert "\n" not in text and "\r" not in text
        assert json.loads(text) == ev
        self.lines.append((category, name, text))
        return n


def huge_prompt(target_bytes, seed):
    """A generated prompt of about target_bytes UTF-8 bytes (never more), mixing CJK,
    ASCII, emoji and characters that need JSON escapes."""
    parts = []
    size = 0
    i = 0
    while True:
        chunk = ("第%d段：请总结 Qwen2.5-0.5B-Instruct 的推理日志 🚀 \"quote\" \\path\\%d "
                 "tab\there <b>&amp;</b> 𠀀 %s. " % (i, i, hashlib.sha256(
                     ("%s:%d" % (seed, i)).encode()).hexdigest()[:16]))
        b = len(chunk.encode("utf-8"))
        if size + b > target_bytes:
            break
        parts.append(chunk)
        size += b
        i += 1
    return "".join(parts)


def build():
    c = Corpus()
    n = lambda: len(c.lines)  # noqa: E731  index of the event being added

    # ---- baseline: well-formed lines from every node --------------------------------
    cat = "baseline"
    c.add(cat, "zh prompt, compact line", compact_line(record(n())))
    c.add(cat, "en prompt, python-logger line", py_line(record(n())), host="gpu-node-2")
    c.add(cat, "zh prompt, no agent.id", compact_line(record(n())), host="gpu-node-3")
    c.add(cat, "fingerprint identity", compact_line(record(n())), host="edge-node-4")
    c.add(cat, "error status", compact_line(record(
        n(), level="ERROR", status="error", response_length=0,
        error="CUDA out of memory. Tried to allocate 20.00 MiB")), host="gpu-node-2")
    c.add(cat, "no agent block at all (host.name only)", py_line(record(n())),
          host="gpu-node-3", agent=False)
    c.add(cat, "extra nested fields and floats", compact_line(record(
        n(), model="Qwen2.5-0.5B-Instruct",
        usage={"prompt_tokens": 12, "completion_tokens": 156, "total_tokens": 168},
        params={"temperature": 0.7, "top_p": 0.8, "repetition_penalty": 1.05,
                "max_new_tokens": 512, "stop": ["<|im_end|>", "<|endoftext|>"]},
        gpu={"id": 0, "util": 0.93, "mem_used_mb": 1534.5, "score": 1.5e-07},
        cached=False, trace=None)), host="edge-node-4")
    c.add(cat, "filebeat tags, log input", compact_line(record(n())), host="gpu-node-2",
          outer={"input": {"type": "log"}, "tags": ["qwen", "prod"]})
    c.add(cat, "leading/trailing spaces around valid JSON",
          "  " + compact_line(record(n())) + "  ")

    # ---- escapes and Unicode ------------------------------------------------------------
    cat = "escapes"
    t = svc_time(n())
    c.add(cat, r'inner \" and \\',
          '{"timestamp":"%s","level":"INFO","request_id":"req_esc_q","prompt":'
          r'"他说：\"你好\"，模型在 C:\\models\\qwen2.5\\ 下",'
          '"response_length":31,"inference_time_ms":405,"status":"success"}' % t)
    t = svc_time(n())
    c.add(cat, r"inner \/",
          '{"timestamp":"%s","level":"INFO","request_id":"req_esc_slash","prompt":'
          r'"summarise https:\/\/qwenlm.github.io\/blog\/qwen2.5\/ please",'
          '"response_length":88,"inference_time_ms":612,"status":"success"}' % t,
          host="gpu-node-2")
    t = svc_time(n())
    c.add(cat, r"inner \b \f \n \r \t",
          '{"timestamp":"%s","level":"INFO","request_id":"req_esc_ctl","prompt":'
          r'"bell\bform\ffeed\n第二行\r\n\t缩进的第三行",'
          '"response_length":64,"inference_time_ms":233,"status":"success"}' % t)
    t = svc_time(n())
    c.add(cat, r"inner \uXXXX (BMP) and \u0000 \u001f \u007f",
          '{"timestamp":"%s","level":"INFO","request_id":"req_esc_u","prompt":'
          r'"\u0041\u00e9\u4e2d\u6587\u3002 \u0000\u001f\u007f\u00a0end",'
          '"response_length":7,"inference_time_ms":98,"status":"success"}' % t,
          host="gpu-node-3")
    t = svc_time(n())
    c.add(cat, r"inner surrogate pairs \ud83d\ude80 \ud840\udc00 and UPPER-case hex",
          '{"timestamp":"%s","level":"INFO","request_id":"req_esc_sp","prompt":'
          r'"rocket \ud83d\ude80 ext-B \ud840\udc00 music \uD834\uDD1E",'
          '"response_length":19,"inference_time_ms":150,"status":"success"}' % t,
          host="edge-node-4")
    c.add(cat, "raw emoji: ZWJ family, skin tone, flag, variation selector",
          compact_line(record(n(), prompt="🤖 Qwen 回答 👍🏽 👨‍👩‍👧‍👦 🇨🇳 ❤️ ☕")))
    c.add(cat, "raw astral CJK (U+20000, U+2A6A5, U+30EDD)",
          compact_line(record(n(), prompt="生僻字：𠀀 𪚥 𰻝𰻝面")), host="gpu-node-2")
    c.add(cat, "python-logger line: CJK + emoji as \\u escapes",
          py_line(record(n(), prompt="用一句话介绍杭州 🏞️ 和西湖 🌊")), host="gpu-node-3")
    c.add(cat, "outer JSON all-ASCII: \\u escapes and surrogate pairs at the event level",
          compact_line(record(n(), prompt="你好 🚀 𠀀 café")), encoding="ascii",
          host="edge-node-4")
    c.add(cat, "outer JSON with \\/ escapes",
          compact_line(record(n(), prompt="see /v1/chat/completions and a/b/c")),
          encoding="slash", host="gpu-node-2")
    c.add(cat, "<>& and raw U+2028/U+2029 inside the inner JSON",
          compact_line(record(n(), prompt="<script>alert('x')</script> & &amp; "
                                          "line\u2028sep para\u2029sep")))
    c.add(cat, "unicode, dotted and quoted inner keys",
          compact_line(record(n(), **{"提示词类别": "闲聊", "a.b": 1, 'we"ird key': "ok",
                                      "emoji_🙂": True})), host="gpu-node-3")

    # ---- fields missing from the inner record ----------------------------------------------
    cat = "missing-fields"
    c.add(cat, "no timestamp", compact_line(record(n(), timestamp=DROP)))
    c.add(cat, "no inference_time_ms", compact_line(record(n(), inference_time_ms=DROP)),
          host="gpu-node-2")
    c.add(cat, "no response_length", py_line(record(n(), response_length=DROP)),
          host="gpu-node-3")
    c.add(cat, "no prompt/status, level only",
          compact_line(record(n(), prompt=DROP, status=DROP, request_id=DROP)),
          host="edge-node-4")
    c.add(cat, "empty object", "{}")
    c.add(cat, "only converted fields, no timestamp",
          '{"inference_time_ms":"1,500","response_length":"20"}', host="gpu-node-2")

    # ---- date { match => ["timestamp","ISO8601"] } x mutate { convert => integer } ------
    # The two filters are independent, so most events test one timestamp shape and one
    # pair of conversions at once; cases.tsv names both.
    conv_strings = [  # (inference_time_ms, response_length), none of them failing
        ("892", "1,024"),
        ("892.7", " 77 "),
        ("abc", ""),
        ("1e3", "1.5e2"),
        ("0x1A", "-0x1A"),
        ("-12", "+5"),
        ("12abc", "1_000"),
        ("0X1f", "0x1e"),
        ("1E3", "1e-3"),
        ("1__000", "-2.5e1"),
        ("\t42\n", "1,234,567"),
        ("NaN", "007"),
        ("1,5e2", "Infinity"),
        (", 7", "\u300042"),
        ("４２", "-0"),
    ]
    conv_others = [  # other JSON types, none of them failing
        (892.7, -3.9),
        (1e2, -0.5),
        (-0.0, 1.5e10),
        (True, False),
        (None, 156),
        (156, None),
        ({"p50": 120, "p99": "892"}, [1, "2", 3.7, None, True, "abc", " 9 "]),
        ([], {"nested": [1, "2"]}),
        (0, "0"),
    ]
    conv_failing = [  # inference_time_ms values whose conversion raises in Logstash
        "none", "1e", "0xZZ", "true", "e5",
    ]
    date_ok = [
        ("2025-04-05T10:23:45.9Z", "1 fraction digit"),
        ("2025-04-05T10:23:45.98Z", "2 fraction digits"),
        ("2025-04-05T10:23:45.987Z", "3 fraction digits"),
        ("2025-04-05T10:23:45.9876Z", "4 fraction digits (truncated, not rounded)"),
        ("2025-04-05T10:23:45.98765Z", "5 fraction digits"),
        ("2025-04-05T10:23:45.987654Z", "6 fraction digits"),
        ("2025-04-05T10:23:45.9876543Z", "7 fraction digits"),
        ("2025-04-05T10:23:45.98765432Z", "8 fraction digits"),
        ("2025-04-05T10:23:45.987654321Z", "9 fraction digits"),
        ("2025-04-05T10:23:45,5Z", "comma fraction"),
        ("2025-04-05T18:23:45+08:00", "offset +08:00"),
        ("2025-04-05T18:23:45+0800", "offset +0800"),
        ("2025-04-05T18:23:45+08", "offset +08"),
        ("2025-04-05T16:08:45.123+05:45", "offset +05:45"),
        ("2025-04-05T23:59:59.999-01:00", "-01:00 late evening: next UTC day"),
        ("2025-04-06T00:30:00+08:00", "+08:00 just after midnight: previous UTC day"),
        ("2025-04-05T23:59:59.999Z", "last millisecond of the UTC day"),
        ("2025-04-06T00:00:00Z", "first instant of the next UTC day"),
        ("2024-02-29T12:00:00Z", "leap day 2024"),
        ("2026-01-01T07:59:59+08:00", "new year in +08:00 is still 2025 in UTC"),
        ("2025-04-05T10:23:45", "no zone: UTC"),
        ("2025-04-05T10:23", "no seconds"),
        ("2025-04-05T10", "hour only"),
        ("2025-04-05", "date only"),
        ("2025-04", "year-month only"),
        ("2025-04-05 10:23:45.123", "space, 3 fraction digits, no zone"),
        ("2025-04-05 10:23:45,123", "space, comma fraction"),
        ("2025-04-05 10:23:45.123+0800", "space, offset +0800"),
        ("2025-04-05 10:23:45.123-01:00", "space, offset -01:00"),
        ("2025-04-05 10:23:45,123Z", "space, comma, Z"),
        ("2025-04-05T18:23:45.123456789+08:00", "nanoseconds and an offset"),
        (["2025-04-05T11:00:00Z", "junk"], "an array whose first element is good"),
    ]
    date_bad = [
        ("2025-02-29T10:00:00Z", "Feb 29 in a non-leap year"),
        ("2025-13-01T00:00:00Z", "month 13"),
        ("2025-04-31T10:00:00Z", "April 31"),
        ("2025-04-05T24:00:00Z", "hour 24"),
        ("2025-04-05T10:23:60Z", "second 60"),
        ("yesterday", "a word"),
        ("", "empty string"),
        (1743848625, "epoch seconds as a number"),
        ("1743848625", "epoch seconds as a string"),
        ("2025-04-05 10:23:45", "space, no fraction"),
        ("2025-04-05 10:23:45.12", "space, 2 fraction digits"),
        ("2025-04-05T10:23:45 Z", "space before the zone"),
        ("05/04/2025 10:23:45", "day/month/year"),
        (True, "a boolean"),
        ({"iso": "2025-04-05T10:23:45Z"}, "an object"),
        (["junk", "2025-04-05T10:23:45Z"], "an array whose first element is bad"),
    ]
    convs = [("convert-string", a, b) for a, b in conv_strings] + \
            [("convert-other", a, b) for a, b in conv_others]
    for i, (ts, tname) in enumerate(date_ok):
        fields = {"timestamp": ts}
        cat, name = "date-ok", "timestamp %s (%s)" % (json.dumps(ts, ensure_ascii=False), tname)
        if i < len(convs):
            ccat, a, b = convs[i]
            fields.update(inference_time_ms=a, response_length=b)
            cat += "+" + ccat
            name += "; inference_time_ms=%s response_length=%s" % (
                json.dumps(a, ensure_ascii=False), json.dumps(b, ensure_ascii=False))
        c.add(cat, name, compact_line(record(n(), **fields)), host=list(NODES)[i % 4])
    for i, (ts, tname) in enumerate(date_bad):
        fields = {"timestamp": ts}
        cat, name = "date-bad", "timestamp %s (%s)" % (json.dumps(ts, ensure_ascii=False), tname)
        if i < len(conv_failing):
            fields.update(inference_time_ms=conv_failing[i])
            cat += "+convert-failing"
            name += "; failing inference_time_ms=%s" % json.dumps(conv_failing[i])
        c.add(cat, name, compact_line(record(n(), **fields)), host=list(NODES)[(i + 1) % 4])
    c.add("date-null", "null timestamp: date does nothing",
          compact_line(record(n(), timestamp=None)), host="edge-node-4")
    c.add("convert-failing", 'failing response_length="yes" (the second field)',
          compact_line(record(n(), inference_time_ms="350", response_length="yes")),
          host="gpu-node-2")
    c.add("convert-failing", 'failing element in an array: inference_time_ms=["5","none"]',
          compact_line(record(n(), inference_time_ms=["5", "none"])), host="gpu-node-1")
    c.add("convert-failing", 'failing inference_time_ms="none" ends the convert step: '
          'response_length "2,048" stays a string',
          compact_line(record(n(), inference_time_ms="none", response_length="2,048")),
          host="gpu-node-3")
    c.add("convert-other", "numbers written with exponents in the line",
          '{"timestamp":"%s","inference_time_ms":1e2,"response_length":2.5E+1,'
          '"status":"success"}' % svc_time(n()), host="edge-node-4")

    # ---- json { source => "message" }: not a JSON object ------------------------------------
    cat = "bad-json"
    good = compact_line(record(n()))
    c.add(cat, "truncated line", good[: len(good) // 2])
    c.add(cat, "single quotes (a Python repr)",
          "{'timestamp': '%s', 'level': 'INFO', 'inference_time_ms': 892}" % svc_time(n()),
          host="gpu-node-2")
    c.add(cat, "trailing garbage", compact_line(record(n())) + " trailing", host="gpu-node-3")
    c.add(cat, "trailing comma", '{"level":"INFO","inference_time_ms":5,}')
    c.add(cat, "NaN literal", '{"level":"INFO","inference_time_ms":NaN}', host="gpu-node-2")
    c.add(cat, "raw tab inside a string",
          '{"level":"INFO","prompt":"tab\there","inference_time_ms":"7"}', host="gpu-node-3")
    c.add(cat, "a bare JSON string", '"just a string"', host="edge-node-4")
    c.add(cat, "a JSON number", "42")
    c.add(cat, "a JSON array", '[{"level":"INFO","inference_time_ms":"5"}]',
          host="gpu-node-2")
    c.add(cat, "JSON null", "null", host="gpu-node-3")
    c.add(cat, "empty string", "")
    c.add(cat, "whitespace only", "   \t ", host="gpu-node-2")
    c.add(cat, "plain text line, filebeat tags",
          "2025-04-05 10:23:45,123 INFO inference done in 892ms (req_abc123xyz)",
          host="gpu-node-3", outer={"tags": ["qwen"]})

    # ---- nested JSON -----------------------------------------------------------------------------
    cat = "nested"
    c.add(cat, "JSON string holding JSON, nested objects and arrays", compact_line(record(
        n(), prompt='解析这个 JSON：{"a": [1, 2, {"b": null}], "c": "\\"q\\""}',
        raw_response=json.dumps({"choices": [{"index": 0, "message": {
            "role": "assistant", "content": "我是通义千问 Qwen。"}}],
            "usage": {"total_tokens": 168}}, ensure_ascii=False),
        history=[{"role": "system", "content": "You are Qwen."},
                 {"role": "user", "content": "你好"}],
        meta={"deep": {"deeper": {"deepest": [[], {}, [[1.5, "x"]], None]}}})),
        host="gpu-node-2")
    c.add(cat, "python-logger line with nested objects", py_line(record(
        n(), meta={"gpu": "A10G", "batch": [1, 2, 3], "kv_cache": {"hit": True}})),
        host="edge-node-4")

    # ---- the inner record's own @timestamp / tags / colliding keys -------------------------
    cat = "inner-special"
    c.add(cat, "valid @timestamp, no timestamp",
          compact_line(record(n(), at_timestamp="2025-04-05T08:00:00.000Z", timestamp=DROP)))
    c.add(cat, "valid @timestamp and timestamp: date wins",
          compact_line(record(n(), at_timestamp="2025-04-04T08:00:00Z")), host="gpu-node-2")
    c.add(cat, "@timestamp with nanoseconds and offset",
          compact_line(record(n(), at_timestamp="2025-04-05T18:23:45.123456789+08:00",
                              timestamp=DROP)), host="gpu-node-3")
    c.add(cat, "invalid @timestamp, no timestamp: receive time",
          compact_line(record(n(), at_timestamp="not-a-date", timestamp=DROP)),
          host="edge-node-4")
    c.add(cat, "invalid @timestamp, valid timestamp",
          compact_line(record(n(), at_timestamp="2025-02-29T00:00:00Z")))
    c.add(cat, "numeric @timestamp",
          compact_line(record(n(), at_timestamp=1743848625, timestamp=DROP)),
          host="gpu-node-2")
    c.add(cat, "tags: array of strings",
          compact_line(record(n(), tags=["inference", "qwen2.5"])), host="gpu-node-3")
    c.add(cat, "tags: a string, then a date failure appends",
          compact_line(record(n(), tags="beta", timestamp="yesterday")), host="edge-node-4")
    c.add(cat, "tags: an object",
          compact_line(record(n(), tags={"env": "prod", "team": "llm"})))
    c.add(cat, "tags: an array with a non-string",
          compact_line(record(n(), tags=["a", 1])), host="gpu-node-2")
    c.add(cat, "tags already holding the failure tag: no duplicate",
          compact_line(record(n(), tags=["_dateparsefailure"], timestamp="2025-13-01")),
          host="gpu-node-3")
    c.add(cat, "inner tags replace filebeat tags; a later failure tag appends",
          compact_line(record(n(), tags=["x"], inference_time_ms="none")),
          host="edge-node-4", outer={"tags": ["qwen", "prod"]})
    c.add(cat, "inner host/agent/ecs collide (removed anyway)",
          compact_line(record(n(), host="x", agent={"name": "inner"}, ecs="1.0")))
    c.add(cat, "inner log object replaces filebeat's log",
          compact_line(record(n(), log={"level": "debug", "logger": "vllm.engine"})),
          host="gpu-node-2")
    c.add(cat, "inner message and input keys overwrite the event's",
          compact_line(record(n(), message="inner message wins", input="stdin")),
          host="gpu-node-3")

    # ---- the Filebeat event itself is unusual ---------------------------------------------------
    cat = "outer"
    c.add(cat, "no message field", MISSING)
    c.add(cat, "message null", None, host="gpu-node-2")
    c.add(cat, "message false", False, host="gpu-node-3")
    c.add(cat, "message a number", 42, host="edge-node-4")
    c.add(cat, "message an object", record(n()))
    c.add(cat, "no @timestamp, line without timestamp: receive time",
          compact_line(record(n(), timestamp=DROP)), ts=DROP, host="gpu-node-2")
    c.add(cat, "no @timestamp, line with timestamp",
          compact_line(record(n())), ts=DROP, host="gpu-node-3")
    c.add(cat, "invalid @timestamp, line without timestamp",
          compact_line(record(n(), timestamp=DROP)), ts="not a timestamp",
          host="edge-node-4")
    c.add(cat, "empty @timestamp, line with timestamp",
          compact_line(record(n())), ts="")
    c.add(cat, "@timestamp with an offset",
          compact_line(record(n(), timestamp=DROP)), ts="2025-04-05T12:23:46.789+02:00",
          host="gpu-node-2")

    # ---- everything at once ----------------------------------------------------------------------
    cat = "combined"
    c.add(cat, "date failure + mutate failure + filebeat tags",
          compact_line(record(n(), timestamp="2025-02-29T10:00:00Z", inference_time_ms="1e",
                              response_length=12)),
          host="gpu-node-3", outer={"tags": ["qwen"]})
    c.add(cat, "invalid inner @timestamp + date failure + string tags",
          compact_line(record(n(), at_timestamp="", timestamp="", tags="t1")),
          host="edge-node-4")

    # ---- huge prompts ------------------------------------------------------------------------------
    cat = "huge"
    c.add(cat, "~100 KB prompt", compact_line(record(
        n(), prompt=huge_prompt(100 * 1024, "100k"), response_length="4,096")),
        host="gpu-node-2")
    c.add(cat, "~1 MB prompt (python-logger line)", py_line(record(
        n(), prompt=huge_prompt(1024 * 1024, "1m"), inference_time_ms=98765.4)),
        host="edge-node-4")
    return c


def main():
    c = build()
    with open(os.path.join(HERE, "inputs.ndjson"), "w", encoding="utf-8", newline="\n") as f:
        for _, _, text in c.lines:
            f.write(text + "\n")
    with open(os.path.join(HERE, "cases.tsv"), "w", encoding="utf-8", newline="\n") as f:
        f.write("line\tcategory\tcase\n")
        for i, (cat, name, _) in enumerate(c.lines):
            f.write("%d\t%s\t%s\n" % (i + 1, cat, name.replace("\t", "\\t").replace("\n", "\\n")))
    # an event may test two independent things ("date-ok+convert-string"): it counts
    # under each
    counts = Counter(part for cat, _, _ in c.lines for part in cat.split("+"))
    print("wrote %d events to tests/corpus/inputs.ndjson" % len(c.lines))
    for cat in dict.fromkeys(part for cat, _, _ in c.lines for part in cat.split("+")):
        print("  %-16s %3d" % (cat, counts[cat]))


if __name__ == "__main__":
    main()
