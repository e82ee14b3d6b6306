//! Type conversion with Logstash's rules (logstash-filter-mutate `convert`, strict mode
//! of Logstash 8.14 and later). The integer rules are surprising, and dashboards depend
//! on them, so they are reproduced exactly; the table is in README.md:
//! - a string is stripped and its commas deleted ("1,024" -> 1024); then hex
//!   (`0x1A` -> 26), or, when it contains a lowercase `e`, `BigDecimal(s).to_i`
//!   ("1e3" -> 1000, "none" fails), otherwise Ruby's `String#to_i`, which reads a
//!   leading integer and ignores the rest ("892.7" -> 892, "12abc" -> 12, "abc" -> 0);
//! - a float is truncated toward zero, true/false are 1/0, null and objects are left
//!   alone, arrays are converted element by element.

use bumpalo::collections::Vec as BVec;
use bumpalo::Bump;

use super::value::{write_timestamp, Value};

/// The conversion targets of Logstash's `convert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    Integer,
    Float,
    String,
    Boolean,
}

impl Conversion {
    pub fn parse(text: &str) -> Result<Conversion, String> {
        match text {
            "integer" => Ok(Conversion::Integer),
            "float" => Ok(Conversion::Float),
            "string" => Ok(Conversion::String),
            "boolean" => Ok(Conversion::Boolean),
            other => Err(format!(
                "`{other}`: expected one of integer, float, string, boolean"
            )),
        }
    }
}

/// What a conversion did.
#[derive(Debug)]
pub enum Converted<'a> {
    Value(Value<'a>),
    /// Null, an object, or already the target type: nothing to do, not a failure.
    Unchanged,
    /// The value cannot be converted; it stays as it was and the event is tagged.
    Failed,
}

/// Converts an expanded value (one level parsed; array items may still be raw).
pub fn convert<'a>(value: &mut Value<'a>, to: Conversion, bump: &'a Bump) -> Converted<'a> {
    value.expand(bump);
    match value {
        Value::Null | Value::Object(_) => Converted::Unchanged,
        Value::Array(items) => {
            let mut results = BVec::with_capacity_in(items.len(), bump);
            for item in items.iter_mut() {
                item.expand(bump);
                let r = match item {
                    Value::Null => Converted::Unchanged,
                    _ => convert_scalar(item, to, bump),
                };
                // Ruby raises mid-map: the whole field stays as it was.
                if matches!(r, Converted::Failed) {
                    return Converted::Failed;
                }
                results.push(r);
            }
            if results.iter().all(|r| matches!(r, Converted::Unchanged)) {
                return Converted::Unchanged;
            }
            let mut out = BVec::with_capacity_in(items.len(), bump);
            for (item, r) in items.iter_mut().zip(results) {
                out.push(match r {
                    Converted::Value(v) => v,
                    _ => std::mem::replace(item, Value::Null),
                });
            }
            Converted::Value(Value::Array(out))
        }
        scalar => convert_scalar(scalar, to, bump),
    }
}

fn convert_scalar<'a>(value: &Value<'a>, to: Conversion, bump: &'a Bump) -> Converted<'a> {
    match to {
        Conversion::Integer => to_integer(value, bump),
        Conversion::Float => to_float(value, bump),
        Conversion::String => to_string(value, bump),
        Conversion::Boolean => to_boolean(value),
    }
}

fn is_integer_token(n: &str) -> bool {
    !n.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
}

fn number<'a>(text: String, bump: &'a Bump) -> Converted<'a> {
    Converted::Value(Value::Number(bump.alloc_str(&text)))
}

fn to_integer<'a>(value: &Value<'a>, bump: &'a Bump) -> Converted<'a> {
    match value {
        Value::Bool(b) => Converted::Value(Value::Number(if *b { "1" } else { "0" })),
        Value::Number(n) if is_integer_token(n) => Converted::Unchanged,
        Value::Number(n) => match n.parse::<f64>() {
            Ok(f) if f.is_finite() => number(truncate_float(f), bump),
            _ => Converted::Failed, // Integer(Infinity) raises FloatDomainError
        },
        Value::Str(s) => match string_to_integer(s) {
            Some(digits) => number(digits, bump),
            None => Converted::Failed,
        },
        Value::Timestamp(t) => number(t.timestamp().to_string(), bump),
        _ => Converted::Unchanged,
    }
}

/// Ruby's `Integer(float)`: truncation toward zero, exact for any magnitude.
fn truncate_float(f: f64) -> String {
    let t = f.trunc();
    if t == 0.0 {
        "0".into()
    } else {
        format!("{t:.0}")
    }
}

/// Longest integer a string conversion may produce; Ruby would build a bignum of any
/// size from "1e999999", lumberd fails the conversion instead.
const MAX_INTEGER_DIGITS: usize = 400;

/// `convert_integer` for a String (mutate.rb): strip, delete commas, then hex, then
/// `BigDecimal(s).to_i` when it contains `e`, else `String#to_i`. `None` = raises.
pub fn string_to_integer(s: &str) -> Option<String> {
    let s: String = ruby_strip(s).chars().filter(|&c| c != ',').collect();
    let (negative, unsigned) = split_sign(&s);
    if has_hex_prefix(unsigned) {
        // parse_signed_hex_str then Integer(value): hex digits, `_` between digits.
        let hex = &unsigned[2..];
        if hex.contains('.') {
            return None;
        }
        let digits =
            ruby_digit_run(hex, |b| b.is_ascii_hexdigit()).filter(|d| d.len() == hex.len())?;
        let v = u128::from_str_radix(&digits, 16).ok()?;
        return Some(signed(negative, v.to_string()));
    }
    if s.contains('e') {
        return big_decimal_to_i(s.trim_matches(|c: char| c.is_ascii_whitespace()));
    }
    // String#to_i: leading whitespace (left where a comma was deleted), a sign, then the
    // leading run of digits (single `_` allowed between digits).
    let (negative, unsigned) = split_sign(s.trim_start_matches(|c: char| c.is_ascii_whitespace()));
    let digits = ruby_digit_run(unsigned, |b| b.is_ascii_digit()).unwrap_or_default();
    Some(signed(negative, strip_zeros(&digits)))
}

/// `/^0x/i`, on bytes (the string may start with a multi-byte character).
fn has_hex_prefix(s: &str) -> bool {
    s.as_bytes()
        .get(..2)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"0x"))
}

/// Ruby's `String#strip`: ASCII whitespace and NUL.
fn ruby_strip(s: &str) -> &str {
    s.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r' | '\0'))
}

fn split_sign(s: &str) -> (bool, &str) {
    match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    }
}

fn signed(negative: bool, digits: String) -> String {
    if negative && digits != "0" {
        format!("-{digits}")
    } else {
        digits
    }
}

fn strip_zeros(digits: &str) -> String {
    let t = digits.trim_start_matches('0');
    if t.is_empty() {
        "0".into()
    } else {
        t.into()
    }
}

/// The leading digits of `s` (per `is_digit`), where a single `_` may separate digits;
/// `None` when `s` does not start with a digit.
fn ruby_digit_run(s: &str, is_digit: impl Fn(u8) -> bool) -> Option<String> {
    let b = s.as_bytes();
    if !b.first().is_some_and(|&c| is_digit(c)) {
        return None;
    }
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if is_digit(b[i]) {
            out.push(b[i] as char);
        } else if b[i] == b'_' && i + 1 < b.len() && is_digit(b[i + 1]) {
            // skip a single separator
        } else {
            break;
        }
        i += 1;
    }
    Some(out)
}

/// `BigDecimal(s).to_i` for a decimal with an exponent; `None` where BigDecimal raises.
fn big_decimal_to_i(s: &str) -> Option<String> {
    let (negative, rest) = split_sign(s);
    let (mantissa, exponent) = rest.split_once(['e', 'E'])?;
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let int = if int.is_empty() {
        String::new()
    } else {
        ruby_digit_run(int, |b| b.is_ascii_digit())
            .filter(|d| d.len() == int.len() - int.matches('_').count())?
    };
    let frac = if frac.is_empty() {
        String::new()
    } else {
        ruby_digit_run(frac, |b| b.is_ascii_digit())
            .filter(|d| d.len() == frac.len() - frac.matches('_').count())?
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let (exp_negative, exp_digits) = split_sign(exponent);
    if exp_digits.is_empty() || !exp_digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let exp: i64 = exp_digits.parse().unwrap_or(i64::MAX);
    let exp = if exp_negative { -exp } else { exp };
    let shift = exp.checked_sub(frac.len() as i64)?;
    let all = format!("{int}{frac}");
    let digits = if shift >= 0 {
        if all.len() as i64 + shift > MAX_INTEGER_DIGITS as i64 {
            return None;
        }
        format!("{all}{}", "0".repeat(shift as usize))
    } else {
        let keep = all.len() as i64 + shift;
        if keep <= 0 {
            "0".into()
        } else {
            all[..keep as usize].to_string()
        }
    };
    Some(signed(negative, strip_zeros(&digits)))
}

fn to_float<'a>(value: &Value<'a>, bump: &'a Bump) -> Converted<'a> {
    match value {
        Value::Bool(b) => Converted::Value(Value::Number(if *b { "1.0" } else { "0.0" })),
        Value::Number(n) if !is_integer_token(n) => Converted::Unchanged,
        Value::Number(n) => match n.parse::<f64>() {
            Ok(f) if f.is_finite() => number(float_json(f), bump),
            _ => Converted::Failed,
        },
        Value::Str(s) => match string_to_float(s) {
            Some(f) => number(float_json(f), bump),
            None => Converted::Failed,
        },
        _ => Converted::Unchanged,
    }
}

/// `convert_float` for a String: strip, delete commas, then hex or Ruby's strict
/// `Float()` (digits with single `_` separators, optional fraction and exponent).
pub fn string_to_float(s: &str) -> Option<f64> {
    let s: String = ruby_strip(s).chars().filter(|&c| c != ',').collect();
    let (negative, unsigned) = split_sign(&s);
    let sign = if negative { -1.0 } else { 1.0 };
    if has_hex_prefix(unsigned) {
        let hex = &unsigned[2..];
        let digits = ruby_digit_run(hex, |b| b.is_ascii_hexdigit())
            .filter(|d| d.len() + hex.matches('_').count() == hex.len())?;
        return u128::from_str_radix(&digits, 16)
            .ok()
            .map(|v| sign * v as f64);
    }
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (unsigned, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let whole = |part: &str| {
        ruby_digit_run(part, |b| b.is_ascii_digit())
            .filter(|d| d.len() + part.matches('_').count() == part.len())
    };
    let int = whole(int)?;
    let frac = match frac {
        Some(f) => whole(f)?,
        None => String::new(),
    };
    let exp = match exponent {
        Some(e) => {
            let (neg, digits) = split_sign(e);
            let d = whole(digits)?;
            format!("e{}{d}", if neg { "-" } else { "" })
        }
        None => String::new(),
    };
    let f: f64 = format!("{int}.{}{exp}", if frac.is_empty() { "0" } else { &frac })
        .parse()
        .ok()?;
    f.is_finite().then_some(sign * f)
}

/// A float as a JSON number that reads back as a float (`892.0`, not `892`).
fn float_json(f: f64) -> String {
    format!("{f:?}")
}

fn to_string<'a>(value: &Value<'a>, bump: &'a Bump) -> Converted<'a> {
    let text = match value {
        Value::Str(_) => return Converted::Unchanged,
        Value::Number(n) if is_integer_token(n) => (*n).to_owned(),
        Value::Number(n) => match n.parse::<f64>() {
            Ok(f) if f.is_finite() => ruby_float_to_s(f),
            _ => (*n).to_owned(),
        },
        Value::Bool(b) => b.to_string(),
        Value::Timestamp(t) => {
            let mut buf = Vec::new();
            write_timestamp(t, &mut buf);
            String::from_utf8(buf).expect("ASCII")
        }
        _ => return Converted::Unchanged,
    };
    Converted::Value(Value::Str(bump.alloc_str(&text)))
}

/// Ruby's `Float#to_s`: `892.7`, `100.0`, and scientific outside [1e-4, 1e16):
/// `1.0e+20`.
pub fn ruby_float_to_s(f: f64) -> String {
    let a = f.abs();
    if a == 0.0 || (1e-4..1e16).contains(&a) {
        let s = format!("{f}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let s = format!("{f:e}");
        let (m, e) = s.split_once('e').expect("scientific form");
        let m = if m.contains('.') {
            m.to_owned()
        } else {
            format!("{m}.0")
        };
        let (sign, digits) = match e.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', e),
        };
        format!("{m}e{sign}{digits:0>2}")
    }
}

fn to_boolean<'a>(value: &Value<'a>) -> Converted<'a> {
    let text: String = match value {
        Value::Bool(_) => return Converted::Unchanged,
        Value::Str(s) => (*s).to_owned(),
        Value::Number(n) if is_integer_token(n) => (*n).to_owned(),
        Value::Number(n) => match n.parse::<f64>() {
            Ok(f) => ruby_float_to_s(f),
            Err(_) => return Converted::Failed,
        },
        _ => return Converted::Unchanged,
    };
    // TRUE_REGEX /^(true|t|yes|y|1|1.0)$/i and FALSE_REGEX, where `.` is any character.
    let matches = |words: &[&str], one_x_zero: char| {
        words.iter().any(|w| text.eq_ignore_ascii_case(w)) || {
            let c: Vec<char> = text.chars().collect();
            c.len() == 3 && c[0] == one_x_zero && c[2] == '0'
        }
    };
    if matches(&["true", "t", "yes", "y", "1"], '1') {
        Converted::Value(Value::Bool(true))
    } else if text.is_empty() || matches(&["false", "f", "no", "n", "0"], '0') {
        Converted::Value(Value::Bool(false))
    } else {
        Converted::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    /// Converts JSON `input` and renders the result, "FAIL" or "unchanged".
    fn conv(input: &str, to: Conversion) -> String {
        let bump = Bump::new();
        let raw: &RawValue = serde_json::from_str(input).unwrap();
        let mut v = Value::Raw(raw);
        let result = match convert(&mut v, to, &bump) {
            Converted::Value(v) => {
                let mut out = Vec::new();
                super::super::value::write_value(&v, &mut out);
                String::from_utf8(out).unwrap()
            }
            Converted::Unchanged => "unchanged".into(),
            Converted::Failed => "FAIL".into(),
        };
        result
    }

    #[test]
    fn integer_conversion_follows_logstash_mutate_table() {
        let table = [
            (r#""892""#, "892"),
            (r#""892.7""#, "892"),
            (r#""1,024""#, "1024"),
            (r#""abc""#, "0"),
            (r#"" 77 ""#, "77"),
            (r#""""#, "0"),
            (r#""12abc""#, "12"),
            (r#""+5""#, "5"),
            (r#"", 7""#, "7"),
            (r#""\u300042""#, "0"),
            (r#""-12""#, "-12"),
            (r#""-0""#, "0"),
            (r#""1_000""#, "1000"),
            (r#""1__000""#, "1"),
            (r#""007""#, "7"),
            (r#""1e3""#, "1000"),
            (r#""1.5e2""#, "150"),
            (r#""-2.5e-1""#, "0"),
            (r#""1E3""#, "1"),
            (r#""none""#, "FAIL"),
            (r#""1e""#, "FAIL"),
            (r#""0x1A""#, "26"),
            (r#""-0x1A""#, "-26"),
            (r#""0xZZ""#, "FAIL"),
            (r#""99999999999999999999""#, "99999999999999999999"),
            ("892.7", "892"),
            ("-3.9", "-3"),
            ("-0.5", "0"),
            ("1e2", "100"),
            ("892", "unchanged"),
            ("true", "1"),
            ("false", "0"),
            ("null", "unchanged"),
            (r#"{"a":1}"#, "unchanged"),
            (r#"["1",null,2.5]"#, "[1,null,2]"),
            (r#"["1","none"]"#, "FAIL"),
        ];
        let mut wrong = Vec::new();
        for (input, want) in table {
            let got = conv(input, Conversion::Integer);
            if got != want {
                wrong.push(format!("{input} -> {got}, Logstash gives {want}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn float_string_and_boolean_conversions_follow_logstash() {
        let table = [
            (r#""892.5""#, Conversion::Float, "892.5"),
            (r#""1,024.5""#, Conversion::Float, "1024.5"),
            ("892", Conversion::Float, "892.0"),
            ("true", Conversion::Float, "1.0"),
            (r#""abc""#, Conversion::Float, "FAIL"),
            (r#""0x10""#, Conversion::Float, "16.0"),
            (r#""1e3""#, Conversion::Float, "1000.0"),
            ("892", Conversion::String, r#""892""#),
            ("892.7", Conversion::String, r#""892.7""#),
            ("1e20", Conversion::String, r#""1.0e+20""#),
            ("true", Conversion::String, r#""true""#),
            (r#""yes""#, Conversion::Boolean, "true"),
            (r#""F""#, Conversion::Boolean, "false"),
            (r#""1x0""#, Conversion::Boolean, "true"),
            ("0", Conversion::Boolean, "false"),
            (r#""""#, Conversion::Boolean, "false"),
            (r#""maybe""#, Conversion::Boolean, "FAIL"),
        ];
        let mut wrong = Vec::new();
        for (input, to, want) in table {
            let got = conv(input, to);
            if got != want {
                wrong.push(format!("{input} as {to:?} -> {got}, Logstash gives {want}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
