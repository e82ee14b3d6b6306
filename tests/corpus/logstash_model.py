#!/usr/bin/env python3
"""Derives tests/corpus/expected.ndjson from tests/corpus/inputs.ndjson.

This is an independent model, written from Logstash's documented and source-level
behaviour (not from lumberd), of what this Logstash pipeline sends to Elasticsearch
for each Filebeat event:

    input  { beats { port => 5044 } }
    filter {
      json   { source => "message" }
      date   { match => ["timestamp", "ISO8601"] target => "@timestamp" }
      mutate { convert => { "inference_time_ms" => "integer" "response_length" => "integer" }
               remove_field => ["host", "agent", "ecs"] }
    }
    output { elasticsearch { index => "qwen-logs-%{+yyyy.MM.dd}" } }

One output line per input line, same order: {"index": "...", "doc": {...}}.
See README.md beside this file for the rules, the tables and the places where this
model follows lumberd's agreed behaviour rather than Logstash's.

The model refuses to guess: an input that falls outside the rules it knows (for
example a `timestamp` that is an empty array) stops it with an error naming the
line, so that whoever adds such a case decides what it should produce.

Stdlib only, deterministic. Run from anywhere:

    python3 tests/corpus/logstash_model.py
"""

import json
import os
import re
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))

# "Receive time": the instant Logstash would stamp with Timestamp.now(). lumberd's
# corpus test pins its clock to this value.
RECEIVE_TIME = datetime(2026, 1, 2, 3, 4, 5, 0, tzinfo=timezone.utc)


class Undefined(Exception):
    """The input is outside the rules this model implements."""


class ConversionFailed(Exception):
    """mutate's convert raised: Logstash tags the event with _mutate_error."""


# --- ISO8601 (logstash-filter-date CasualISO8601Parser) ------------------------------

# Joda ISODateTimeFormat.dateTimeParser(), restricted to the forms the corpus agrees
# on: yyyy[-MM[-dd]] [T HH[:mm[:ss[(.|,)fraction]]] [offset]].
# re.ASCII: \d must not match non-ASCII digits such as U+FF14.
JODA_ISO = re.compile(
    r"(?P<y>\d{4})(?:-(?P<mo>\d{2})(?:-(?P<d>\d{2}))?)?"
    r"(?:T(?P<h>\d{2})(?::(?P<mi>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<f>\d+))?)?)?"
    r"(?P<z>Z|[+-]\d{2}(?::?\d{2})?)?)?",
    re.ASCII,
)
# The four fall-back patterns: yyyy-MM-dd HH:mm:ss.SSS[Z] and yyyy-MM-dd HH:mm:ss,SSS[Z],
# Z being +HHmm, +HH:mm or Z. Joda's `SSS` is appendFractionOfSecond(3, 9): when parsing it
# takes 1 to 9 digits.
CASUAL = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2}) (?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})"
    r"[.,](?P<f>\d{1,9})(?P<z>Z|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)


def parse_iso8601(text):
    """The instant (a UTC datetime truncated to milliseconds) or None if rejected."""
    for pattern in (JODA_ISO, CASUAL):
        m = pattern.fullmatch(text)
        if m is None:
            continue
        g = m.groupdict()
        try:
            local = datetime(
                int(g["y"]), int(g["mo"] or 1), int(g["d"] or 1),
                int(g["h"] or 0), int(g["mi"] or 0), int(g["s"] or 0),
                # the fraction is truncated (not rounded) to milliseconds
                int(((g["f"] or "") + "000")[:3]) * 1000,
            )
        except ValueError:  # Feb 29 2025, month 13, hour 24, second 60, ...
            continue
        z = g["z"]
        offset = 0
        if z and z != "Z":
            digits = z[1:].replace(":", "")
            hh, mm = int(digits[:2]), int(digits[2:] or 0)
            if hh > 23 or mm > 59:
                continue
            offset = (hh * 60 + mm) * (-1 if z[0] == "-" else 1)
        # no offset: the JVM's default zone, UTC in Logstash's container
        return (local - timedelta(minutes=offset)).replace(tzinfo=timezone.utc)
    return None


def format_timestamp(ts):
    """Logstash's Timestamp#to_s: ISO8601 UTC, always three fraction digits."""
    return ts.strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % (ts.microsecond // 1000)


# --- Ruby semantics mutate's convert_integer relies on ---------------------------------

RUBY_SPACE = " \t\n\v\f\r"  # String#strip and String#to_i: ASCII whitespace only


def ruby_strip(s):
    if s[:1] == "\0" or s[-1:] == "\0":
        raise Undefined("String#strip of a NUL-delimited string")
    return s.strip(RUBY_SPACE)


def ruby_to_i(s):
    """String#to_i (base 10): leading whitespace, an optional sign, then digits with
    single underscores between them; stops at the first other character; 0 if none."""
    i, n = 0, len(s)
    while i < n and s[i] in RUBY_SPACE:
        i += 1
    sign = 1
    if i < n and s[i] in "+-":
        sign = -1 if s[i] == "-" else 1
        i += 1
    if s[i:i + 2] in ("0d", "0D"):
        raise Undefined("String#to_i of a 0d-prefixed string")
    digits = ""
    while i < n:
        ch = s[i]
        if "0" <= ch <= "9":
            digits += ch
        elif ch == "_" and digits and i + 1 < n and "0" <= s[i + 1] <= "9":
            pass  # one underscore between two digits
        else:
            break
        i += 1
    return sign * int(digits) if digits else 0


BIGDECIMAL = re.compile(r"([+-]?)(\d*)(?:(\.)(\d*))?(?:([eE])([+-]?)(\d*))?", re.ASCII)


def ruby_bigdecimal_to_i(s):
    """BigDecimal(s).to_i; raises ConversionFailed where BigDecimal() raises."""
    if "_" in s:
        raise Undefined("BigDecimal() of a string with underscores")
    m = BIGDECIMAL.fullmatch(s)
    if m is None:  # letters other than the exponent marker, spaces, ...: "none", "true"
        raise ConversionFailed("BigDecimal(%r)" % s)
    _, int_digits, dot, frac_digits, exp_mark, _, exp_digits = m.groups()
    if not int_digits and not frac_digits:  # "e5", "+e3"
        raise ConversionFailed("BigDecimal(%r)" % s)
    if exp_mark and not exp_digits:  # "1e", "1e+"
        raise ConversionFailed("BigDecimal(%r)" % s)
    if not int_digits or (dot and not frac_digits):  # ".5e1", "1.e3"
        raise Undefined("BigDecimal() of %r" % s)
    return int(Decimal(s))  # to_i truncates toward zero


def ruby_hex_float(unsigned):
    """Float() of a lower-cased, unsigned "0x..." string."""
    if re.fullmatch(r"0x[0-9a-f]+", unsigned):
        return float(int(unsigned, 16))
    if "." in unsigned or "p" in unsigned:
        raise Undefined("Float() of hexadecimal %r" % unsigned)
    raise ConversionFailed("Float(%r)" % unsigned)


def convert_integer(value):
    """logstash-filter-mutate convert_integer, Logstash >= 8.14 (strict) on a JRuby
    whose Float() does not take signed hex (parse_signed_hex_str's regex branch)."""
    if isinstance(value, str):
        value = ruby_strip(value).replace(",", "")  # value.strip.delete(',')
    if value is True:
        return 1
    if value is False:
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if re.search(r"^[+-]?0x", value, re.I | re.M):  # value.match?(/^[+-]?0x/i)
            sign = -1 if value.startswith("-") else 1
            unsigned = re.sub(r"^[+-]", "", value, count=1, flags=re.M).lower()
            signed_float = sign * ruby_hex_float(unsigned)
            if "." not in value:
                return sign * int(unsigned, 16)  # Integer(value)
            return int(signed_float)  # Integer(signed_float)
        if "e" in value:  # lower-case e only
            return ruby_bigdecimal_to_i(value)
        return ruby_to_i(value)
    if isinstance(value, float):
        return int(value)  # Integer(float) truncates toward zero
    raise Undefined("convert_integer of %r" % (value,))


# --- the event -----------------------------------------------------------------------------


def add_tag(ev, tag):
    """Event#tag: no tags -> [tag]; a list -> append unless present; a scalar ->
    [scalar, tag]."""
    tags = ev.get("tags")
    if tags is None:
        ev["tags"] = [tag]
    elif isinstance(tags, list):
        if tag not in tags:
            tags.append(tag)
    elif isinstance(tags, str):
        ev["tags"] = [tags] if tags == tag else [tags, tag]
    else:
        raise Undefined("adding a tag to tags=%r" % (tags,))


def to_s(value):
    """The original value of a rejected @timestamp as kept in _@timestamp."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise Undefined("_@timestamp of %r" % (value,))


def message_to_s(value):
    """Ruby's to_s of a non-string message (objects: compact JSON, see process)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        raise Undefined("a float message %r" % (value,))
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def legal_tags(value):
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(t, str) for t in value))


def strict_json(text):
    """JSON text -> value; rejects trailing data, empty/blank text, NaN/Infinity and
    raw control characters in strings."""
    def no_constants(name):
        raise ValueError("non-standard JSON constant " + name)
    return json.loads(text, parse_constant=no_constants)


def process(ev):
    """One Filebeat event (a dict) -> (index, document)."""
    # -- beats input ----------------------------------------------------------------------
    ev.pop("@metadata", None)
    # An event with a message goes through the codec (DecodedEventTransform): the message
    # becomes a string (`hash.delete("message").to_s`; lumberd writes objects and arrays
    # as compact JSON where Ruby would write its inspect form) and an unusable @timestamp
    # is replaced by the receive time without a tag. Without a message the event is built
    # as is (Event#initialize): _@timestamp and _timestampparsefailure.
    decoded = ev.get("message") is not None
    if decoded and not isinstance(ev["message"], str):
        ev["message"] = message_to_s(ev["message"])
    if ev.get("@timestamp") is None:
        ev.pop("@timestamp", None)
        ts = RECEIVE_TIME
    else:
        original = ev.pop("@timestamp")
        ts = parse_iso8601(original) if isinstance(original, str) else None
        if ts is None:
            ts = RECEIVE_TIME
            if not decoded:
                ev["_@timestamp"] = to_s(original)
                add_tag(ev, "_timestampparsefailure")

    # -- json { source => "message" } ------------------------------------------------------
    source = ev.get("message")
    if source is None or source is False:
        pass
    elif not isinstance(source, str):
        add_tag(ev, "_jsonparsefailure")
    else:
        try:
            parsed = strict_json(source)
        except ValueError:
            parsed = None
            add_tag(ev, "_jsonparsefailure")
        else:
            if not isinstance(parsed, dict):
                parsed = None
                add_tag(ev, "_jsonparsefailure")
        if parsed is not None:
            has_ts = "@timestamp" in parsed
            inner_ts = parsed.pop("@timestamp", None)
            for key, value in parsed.items():
                if key == "@metadata":
                    raise Undefined("an inner @metadata key")
                if key == "tags" and not legal_tags(value):
                    ev["_tags"] = value
                    add_tag(ev, "_tagsparsefailure")
                else:
                    ev[key] = value  # a literal top-level key, replacing what was there
            if has_ts:
                if inner_ts is None or inner_ts is False:
                    raise Undefined("an inner @timestamp of %r" % (inner_ts,))
                parsed_ts = parse_iso8601(inner_ts) if isinstance(inner_ts, str) else None
                if parsed_ts is not None:
                    ts = parsed_ts
                else:
                    ts = RECEIVE_TIME
                    add_tag(ev, "_timestampparsefailure")
                    ev["_@timestamp"] = to_s(inner_ts)

    # -- date { match => ["timestamp", "ISO8601"] target => "@timestamp" } -------------
    value = ev.get("timestamp")
    if value is not None:
        # The Java date filter takes strings only: an array is a failure.
        parsed_ts = parse_iso8601(value) if isinstance(value, str) else None
        if parsed_ts is not None:
            ts = parsed_ts
        else:
            add_tag(ev, "_dateparsefailure")

    # -- mutate { convert => {...} remove_field => [...] } -------------------------------
    for field in ("inference_time_ms", "response_length"):
        original = ev.get(field)
        if original is None or isinstance(original, dict):
            continue  # missing, null, or a hash: left alone
        try:
            if isinstance(original, list):
                converted = [v if v is None else convert_integer(v) for v in original]
            else:
                converted = convert_integer(original)
        except ConversionFailed:
            # Logstash's mutate rescues the exception, tags the event and skips the
            # rest of the block: the remaining conversions (and, in Logstash but not
            # in lumberd, remove_field).
            add_tag(ev, "_mutate_error")
            break
        ev[field] = converted
    for field in ("host", "agent", "ecs"):
        ev.pop(field, None)

    # -- output --------------------------------------------------------------------------------
    doc = {"@timestamp": format_timestamp(ts)}
    doc.update(ev)
    return "qwen-logs-" + ts.strftime("%Y.%m.%d"), doc


def dump_line(obj):
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    # keep one document per \n-line for every reader (see generate.py)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def main():
    src = os.path.join(HERE, "inputs.ndjson")
    dst = os.path.join(HERE, "expected.ndjson")
    out = []
    with open(src, encoding="utf-8", newline="\n") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            try:
                index, doc = process(strict_json(line))
            except Undefined as e:
                sys.exit("%s:%d: not covered by the model: %s" % (src, number, e))
            out.append(dump_line({"index": index, "doc": doc}))
    with open(dst, "w", encoding="utf-8", newline="\n") as f:
        for line in out:
            f.write(line + "\n")
    print("wrote %d documents to tests/corpus/expected.ndjson" % len(out))


if __name__ == "__main__":
    main()
