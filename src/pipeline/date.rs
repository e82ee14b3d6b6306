//! Date parsing for the `date` filter and the input's `@timestamp`, following Logstash's
//! date filter (logstash-filter-date): `ISO8601` is Joda's
//! `ISODateTimeFormat.dateTimeParser()` plus the space-separated forms of
//! `CasualISO8601Parser`; `UNIX` and `UNIX_MS` are epoch numbers or numeric strings;
//! anything else is a pattern, in Joda's letters (`yyyy-MM-dd HH:mm:ss`, as Logstash
//! configs have them) or in strftime form when it contains `%`. Results are truncated
//! to milliseconds, as Joda's are.

use chrono::format::{parse as chrono_parse, Fixed, Item, Numeric, Pad, Parsed, StrftimeItems};
use chrono::{
    DateTime, Datelike, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone,
    Utc,
};

/// One entry of a `date` filter's `formats`.
#[derive(Debug, Clone)]
pub enum DateFormat {
    Iso8601,
    Rfc3339,
    Unix,
    UnixMs,
    Pattern(Pattern),
}

impl DateFormat {
    pub fn parse(text: &str) -> Result<DateFormat, String> {
        Ok(match text {
            "ISO8601" => DateFormat::Iso8601,
            "RFC3339" => DateFormat::Rfc3339,
            "UNIX" => DateFormat::Unix,
            "UNIX_MS" => DateFormat::UnixMs,
            "TAI64N" => return Err("TAI64N is not supported".into()),
            pattern => DateFormat::Pattern(Pattern::parse(pattern)?),
        })
    }
}

/// The zone for values that carry no offset.
#[derive(Debug, Clone, Copy)]
pub enum Zone {
    Utc,
    Fixed(FixedOffset),
    Named(chrono_tz::Tz),
}

impl Zone {
    /// `UTC`, a fixed offset like `+08:00`, or an IANA name like `Asia/Shanghai`.
    pub fn parse(text: &str) -> Result<Zone, String> {
        if text.eq_ignore_ascii_case("utc") || text == "Z" {
            return Ok(Zone::Utc);
        }
        if let Some(offset) = parse_offset(text.as_bytes()).filter(|(_, n)| *n == text.len()) {
            return FixedOffset::east_opt(offset.0)
                .map(Zone::Fixed)
                .ok_or_else(|| format!("`{text}`: offset out of range"));
        }
        text.parse::<chrono_tz::Tz>()
            .map(Zone::Named)
            .map_err(|_| format!("`{text}`: not UTC, an offset like +08:00 or an IANA zone name"))
    }

    /// The instant of a local time in this zone. In a DST overlap the earlier instant
    /// wins (Joda's choice); a local time in a DST gap does not exist (a parse failure).
    pub fn resolve(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self {
            Zone::Utc => Some(local.and_utc()),
            Zone::Fixed(o) => earliest(o.from_local_datetime(&local)),
            Zone::Named(tz) => earliest(tz.from_local_datetime(&local)),
        }
    }
}

fn earliest<T: TimeZone>(r: LocalResult<DateTime<T>>) -> Option<DateTime<Utc>> {
    r.earliest().map(|t| t.with_timezone(&Utc))
}

/// A value handed to a date parser: a JSON string's content or a JSON number's text.
#[derive(Debug, Clone, Copy)]
pub enum DateInput<'s> {
    Text(&'s str),
    Number(&'s str),
}

/// Tries `formats` in order, like Logstash's date filter; `None` when none matches.
pub fn parse_date(
    input: DateInput,
    formats: &[DateFormat],
    zone: Zone,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    formats
        .iter()
        .find_map(|f| parse_one(input, f, zone, now))
        .map(truncate_to_millis)
}

fn parse_one(
    input: DateInput,
    format: &DateFormat,
    zone: Zone,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match (format, input) {
        (DateFormat::Iso8601, DateInput::Text(s)) => iso8601(s, zone),
        (DateFormat::Rfc3339, DateInput::Text(s)) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        (DateFormat::Unix, DateInput::Text(s) | DateInput::Number(s)) => epoch(s.trim(), 1000),
        (DateFormat::UnixMs, DateInput::Text(s) | DateInput::Number(s)) => epoch(s.trim(), 1),
        (DateFormat::Pattern(p), DateInput::Text(s)) => p.parse_value(s, zone, now),
        // Text formats given a number fail, as Logstash's do ("Expected a string value").
        _ => None,
    }
}

fn truncate_to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.timestamp_subsec_nanos();
    t - chrono::Duration::nanoseconds(i64::from(nanos % 1_000_000))
}

/// Epoch seconds (`unit_ms` 1000) or milliseconds (1) as an integer or decimal string.
fn epoch(s: &str, unit_ms: i64) -> Option<DateTime<Utc>> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let simple = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    let millis = if simple {
        let whole: i64 = int.parse().ok()?;
        let mut ms = whole.checked_mul(unit_ms)?;
        if unit_ms == 1000 {
            let f3: String = frac.chars().chain("000".chars()).take(3).collect();
            ms = ms.checked_add(f3.parse::<i64>().ok()?)?;
        }
        if neg {
            -ms
        } else {
            ms
        }
    } else {
        // Exponent forms of JSON numbers, e.g. 1.7e9.
        let v: f64 = s.parse().ok()?;
        if !v.is_finite() {
            return None;
        }
        (v * unit_ms as f64).trunc() as i64
    };
    DateTime::from_timestamp_millis(millis)
}

/// Joda's `dateTimeParser()` (date `yyyy[-MM[-dd]]`, then optionally `T` and
/// `HH[:mm[:ss[.fraction]]]` and an offset), then Logstash's casual forms
/// `yyyy-MM-dd HH:mm:ss.SSS[Z]` (and with `,`). Week and ordinal dates are not accepted.
pub fn iso8601(s: &str, zone: Zone) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    let mut c = Cursor { b, i: 0 };
    let year = c.digits(4, 4)? as i32;
    let mut month = 1;
    let mut day = 1;
    if c.eat(b'-') {
        month = c.digits(2, 2)?;
        if c.eat(b'-') {
            day = c.digits(2, 2)?;
        }
    }
    let date = NaiveDate::from_ymd_opt(year, month, day)?;
    if c.done() {
        return zone.resolve(date.and_time(NaiveTime::MIN));
    }
    let casual = c.peek() == Some(b' ');
    if !(c.eat(b'T') || (casual && day_given(b) && c.eat(b' '))) {
        return None;
    }
    let hour = c.digits(2, 2)?;
    let (mut minute, mut second, mut nanos) = (0, 0, 0);
    if casual {
        // `HH:mm:ss.SSS` is mandatory in the casual forms; the fraction takes 1-9 digits.
        c.expect(b':')?;
        minute = c.digits(2, 2)?;
        c.expect(b':')?;
        second = c.digits(2, 2)?;
        if !(c.eat(b'.') || c.eat(b',')) {
            return None;
        }
        nanos = c.fraction()?;
    } else if c.eat(b':') {
        minute = c.digits(2, 2)?;
        if c.eat(b':') {
            second = c.digits(2, 2)?;
            if c.eat(b'.') || c.eat(b',') {
                nanos = c.fraction()?;
            }
        }
    }
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    let local = date.and_time(time);
    if c.done() {
        return zone.resolve(local);
    }
    let (offset, used) = if c.peek() == Some(b'Z') {
        (0, 1)
    } else {
        parse_offset(&b[c.i..])?
    };
    if c.i + used != b.len() {
        return None;
    }
    let offset = FixedOffset::east_opt(offset)?;
    earliest(offset.from_local_datetime(&local))
}

fn day_given(b: &[u8]) -> bool {
    b.len() > 10 && b[4] == b'-' && b[7] == b'-'
}

/// `±HH`, `±HH:mm` or `±HHmm`: (seconds east, bytes used).
fn parse_offset(b: &[u8]) -> Option<(i32, usize)> {
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let mut c = Cursor { b, i: 1 };
    let hours = c.digits(2, 2)? as i32;
    let mut minutes = 0;
    // `:mm` or `mm`.
    if c.eat(b':') || c.peek().is_some_and(|d| d.is_ascii_digit()) {
        minutes = c.digits(2, 2)? as i32;
    }
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((sign * (hours * 3600 + minutes * 60), c.i))
}

struct Cursor<'b> {
    b: &'b [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn done(&self) -> bool {
        self.i == self.b.len()
    }
    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        self.i += usize::from(hit);
        hit
    }
    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }
    fn digits(&mut self, min: usize, max: usize) -> Option<u32> {
        let start = self.i;
        let mut v: u32 = 0;
        while self.i - start < max {
            match self.peek() {
                Some(d @ b'0'..=b'9') => {
                    v = v * 10 + u32::from(d - b'0');
                    self.i += 1;
                }
                _ => break,
            }
        }
        (self.i - start >= min).then_some(v)
    }
    /// 1 to 9 fraction digits, as nanoseconds.
    fn fraction(&mut self) -> Option<u32> {
        let start = self.i;
        let v = self.digits(1, 9)?;
        let n = self.i - start;
        Some(v * 10u32.pow((9 - n) as u32))
    }
}

/// A date pattern, compiled once at configuration time.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: Box<str>,
    items: Vec<Item<'static>>,
}

impl Pattern {
    /// A Joda pattern (`yyyy-MM-dd'T'HH:mm:ss.SSSZ`), or strftime when it contains `%`.
    pub fn parse(source: &str) -> Result<Pattern, String> {
        let items = if source.contains('%') {
            StrftimeItems::new(source)
                .parse_to_owned()
                .map_err(|_| format!("`{source}`: invalid strftime pattern"))?
        } else {
            joda_items(source)?
        };
        Ok(Pattern {
            source: source.into(),
            items,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Formats an instant (in UTC), for `%{+yyyy.MM.dd}` in templates.
    pub fn format(&self, t: &DateTime<Utc>, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(out, "{}", t.format_with_items(self.items.iter()));
    }

    /// True when the pattern only prints year, month and day (and literals): its output
    /// changes once a day, so a rendered index name can be cached per day.
    pub fn is_daily(&self) -> bool {
        self.items.iter().all(|i| match i {
            Item::Literal(_) | Item::Space(_) | Item::OwnedLiteral(_) | Item::OwnedSpace(_) => true,
            Item::Numeric(n, _) => matches!(
                n,
                Numeric::Year | Numeric::YearMod100 | Numeric::Month | Numeric::Day
            ),
            Item::Fixed(f) => matches!(f, Fixed::ShortMonthName | Fixed::LongMonthName),
            Item::Error => false,
        })
    }

    fn parse_value(&self, s: &str, zone: Zone, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut parsed = Parsed::new();
        chrono_parse(&mut parsed, s, self.items.iter()).ok()?;
        // Patterns without a year (syslog's `MMM dd HH:mm:ss`) take the current year, as
        // Logstash's do; without a time of day, midnight.
        if parsed.year().is_none()
            && parsed.year_mod_100().is_none()
            && parsed.timestamp().is_none()
        {
            parsed.set_year(i64::from(now.year())).ok()?;
        }
        if parsed.hour_div_12().is_none() && parsed.timestamp().is_none() {
            parsed.set_hour(0).ok()?;
        }
        if parsed.minute().is_none() {
            let _ = parsed.set_minute(0);
        }
        if parsed.offset().is_some() || parsed.timestamp().is_some() {
            return parsed.to_datetime().ok().map(|t| t.with_timezone(&Utc));
        }
        zone.resolve(parsed.to_naive_datetime_with_offset(0).ok()?)
    }
}

/// Items chrono only builds from strftime (fixed-width fractions are internal to it).
fn strftime_item(spec: &'static str) -> Item<'static> {
    StrftimeItems::new(spec)
        .next()
        .expect("a valid strftime item")
}

/// Translates Joda pattern letters into chrono items.
fn joda_items(source: &str) -> Result<Vec<Item<'static>>, String> {
    let chars: Vec<char> = source.chars().collect();
    let mut items = Vec::new();
    let mut i = 0;
    let num =
        |n: Numeric, count: usize| Item::Numeric(n, if count >= 2 { Pad::Zero } else { Pad::None });
    while i < chars.len() {
        let c = chars[i];
        let mut n = 1;
        while i + n < chars.len() && chars[i + n] == c {
            n += 1;
        }
        if c == '\'' {
            // Quoted literal; '' is a single quote.
            if n >= 2 && n % 2 == 0 {
                items.push(Item::OwnedLiteral("'".repeat(n / 2).into()));
                i += n;
                continue;
            }
            let end = chars[i + 1..]
                .iter()
                .position(|&ch| ch == '\'')
                .ok_or_else(|| format!("`{source}`: unterminated quote"))?;
            let lit: String = chars[i + 1..i + 1 + end].iter().collect();
            items.push(Item::OwnedLiteral(lit.into()));
            i += end + 2;
            continue;
        }
        let item = match (c, n) {
            ('y' | 'Y' | 'u', 2) => num(Numeric::YearMod100, 2),
            ('y' | 'Y' | 'u', _) => num(Numeric::Year, 4),
            ('M', 1 | 2) => num(Numeric::Month, n),
            ('M', 3) => Item::Fixed(Fixed::ShortMonthName),
            ('M', _) => Item::Fixed(Fixed::LongMonthName),
            ('d', _) => num(Numeric::Day, n),
            ('D', _) => num(Numeric::Ordinal, n),
            ('H', _) => num(Numeric::Hour, n),
            ('h', _) => num(Numeric::Hour12, n),
            ('m', _) => num(Numeric::Minute, n),
            ('s', _) => num(Numeric::Second, n),
            ('S', 1..=3) => strftime_item("%3f"),
            ('S', 4..=6) => strftime_item("%6f"),
            ('S', _) => strftime_item("%9f"),
            ('a', _) => Item::Fixed(Fixed::UpperAmPm),
            ('E', 1..=3) => Item::Fixed(Fixed::ShortWeekdayName),
            ('E', _) => Item::Fixed(Fixed::LongWeekdayName),
            ('Z', 1) => Item::Fixed(Fixed::TimezoneOffset),
            ('Z', 2) => Item::Fixed(Fixed::TimezoneOffsetColon),
            ('Z' | 'z', _) => {
                return Err(format!(
                    "`{source}`: zone names (`{}`) cannot be parsed; use Z or ZZ for offsets, \
                     and the filter's `timezone` for named zones",
                    c.to_string().repeat(n)
                ))
            }
            (c, _) if c.is_ascii_alphabetic() => {
                return Err(format!(
                    "`{source}`: unknown pattern letter `{c}` (quote literal text: 'T')"
                ))
            }
            (c, _) => Item::OwnedLiteral(c.to_string().repeat(n).into()),
        };
        items.push(item);
        i += n;
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(s: &str) -> Option<String> {
        iso8601(s, Zone::Utc)
            .map(|t| truncate_to_millis(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }

    #[test]
    fn iso8601_accepts_what_jodas_date_time_parser_accepts() {
        let cases = [
            ("2025-04-05T10:23:45Z", "2025-04-05T10:23:45.000Z"),
            (
                "2025-04-05T10:23:45.123456789+08:00",
                "2025-04-05T02:23:45.123Z",
            ),
            ("2025-04-05T10:23:45,5-0130", "2025-04-05T11:53:45.500Z"),
            ("2025-04-05T10:23", "2025-04-05T10:23:00.000Z"),
            ("2025-04-05T10", "2025-04-05T10:00:00.000Z"),
            ("2025-04-05", "2025-04-05T00:00:00.000Z"),
            ("2025-04", "2025-04-01T00:00:00.000Z"),
            ("2024-02-29T23:59:59.999-01:00", "2024-03-01T00:59:59.999Z"),
            ("2025-04-05 10:23:45.123", "2025-04-05T10:23:45.123Z"),
            ("2025-04-05 10:23:45,123+0800", "2025-04-05T02:23:45.123Z"),
        ];
        for (input, want) in cases {
            assert_eq!(iso(input).as_deref(), Some(want), "{input}");
        }
    }

    #[test]
    fn iso8601_rejects_what_logstash_rejects() {
        for bad in [
            "2025-04-05 10:23:45",
            "2025-02-29T10:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-04-05T24:00:00Z",
            "2025-04-05T10:23:60Z",
            "yesterday",
            "",
            "2025-04-05T10:23:45Zjunk",
            "2025-04-05T10:23:45+25:00",
            "20250405",
        ] {
            assert_eq!(iso(bad), None, "{bad:?} must be rejected");
        }
    }

    #[test]
    fn zoneless_values_use_the_configured_zone_and_dst_gaps_fail() {
        let tz = Zone::parse("Asia/Shanghai").unwrap();
        let t = iso8601("2025-04-05T08:00:00", tz).unwrap();
        assert_eq!(t.to_rfc3339(), "2025-04-05T00:00:00+00:00");
        let ny = Zone::parse("America/New_York").unwrap();
        assert!(
            iso8601("2025-03-09T02:30:00", ny).is_none(),
            "02:30 does not exist that day"
        );
        let fixed = Zone::parse("-02:00").unwrap();
        assert_eq!(
            iso8601("2025-04-05T23:00:00", fixed).unwrap().to_rfc3339(),
            "2025-04-06T01:00:00+00:00"
        );
        assert!(Zone::parse("Mars/Olympus").is_err());
    }

    #[test]
    fn unix_formats_take_numbers_and_numeric_strings() {
        let now = Utc::now();
        let p = |input, f: &str| {
            parse_date(input, &[DateFormat::parse(f).unwrap()], Zone::Utc, now)
                .map(|t| t.timestamp_millis())
        };
        assert_eq!(
            p(DateInput::Number("1743848625"), "UNIX"),
            Some(1_743_848_625_000)
        );
        assert_eq!(
            p(DateInput::Text("1743848625.1239"), "UNIX"),
            Some(1_743_848_625_123)
        );
        assert_eq!(
            p(DateInput::Number("1.7e9"), "UNIX"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            p(DateInput::Text("1743848625123"), "UNIX_MS"),
            Some(1_743_848_625_123)
        );
        assert_eq!(p(DateInput::Text("12abc"), "UNIX"), None);
        assert_eq!(
            p(DateInput::Number("1743848625"), "ISO8601"),
            None,
            "ISO8601 wants a string"
        );
    }

    #[test]
    fn joda_and_strftime_patterns_parse_and_bad_ones_are_rejected() {
        let now = Utc::now();
        let p = |input, f: &str| {
            parse_date(
                DateInput::Text(input),
                &[DateFormat::parse(f).unwrap()],
                Zone::Utc,
                now,
            )
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        };
        assert_eq!(
            p("2025-04-05 10:23:45", "yyyy-MM-dd HH:mm:ss").as_deref(),
            Some("2025-04-05T10:23:45.000Z")
        );
        assert_eq!(
            p("05/Apr/2025:10:23:45 +0800", "dd/MMM/yyyy:HH:mm:ss Z").as_deref(),
            Some("2025-04-05T02:23:45.000Z")
        );
        assert_eq!(
            p("2025-04-05T10:23:45.250", "yyyy-MM-dd'T'HH:mm:ss.SSS").as_deref(),
            Some("2025-04-05T10:23:45.250Z")
        );
        assert_eq!(
            p("2025/04/05 10h", "%Y/%m/%d %Hh").as_deref(),
            Some("2025-04-05T10:00:00.000Z")
        );
        for bad in ["yyyy-MM-dd HH:mm:ss zzz", "yyyy-qq", "yyyy-MM-dd'T", "%Q"] {
            assert!(DateFormat::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn index_patterns_format_in_utc_and_know_when_they_are_daily() {
        let p = Pattern::parse("yyyy.MM.dd").unwrap();
        let t = Utc.with_ymd_and_hms(2024, 2, 9, 23, 59, 59).unwrap();
        let mut s = String::new();
        p.format(&t, &mut s);
        assert_eq!(s, "2024.02.09");
        assert!(p.is_daily());
        assert!(!Pattern::parse("yyyy.MM.dd.HH").unwrap().is_daily());
        let mut s = String::new();
        Pattern::parse("yyyy.M.d").unwrap().format(&t, &mut s);
        assert_eq!(s, "2024.2.9", "single letters do not pad, as in Joda");
    }
}
