//! The `[pipeline]` section: filters, index, fingerprint and log-derived metrics, checked
//! with the line each problem is on. Filters are an ordered list of one-key tables:
//!
//! ```toml
//! [[pipeline.filter]]
//! json = { source = "message" }
//! if = '[message] =~ /^\{/'          # optional: Logstash's condition syntax
//! ```

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::env::EnvText;
use super::problems::Problems;
use super::raw::line_of;
use crate::pipeline::{
    Condition, Conversion, DateFormat, FieldPath, Filter, Fingerprint, LabelSpec, MetricKind,
    MetricSpec, PipelineSettings, Step, Template, Zone, DATE_FAILURE_TAG, JSON_FAILURE_TAG,
    MUTATE_FAILURE_TAG,
};

/// Only the pipeline, read from the file text so values keep their positions.
#[derive(Deserialize, Default)]
struct Document {
    #[serde(default)]
    pipeline: RawPipeline,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    index: Option<String>,
    fingerprint: Option<Vec<String>>,
    filter: Option<Vec<Spanned<RawStep>>>,
    metric: Option<Vec<Spanned<RawMetric>>>,
}

enum RawFilter {
    Json(RawJson),
    Date(RawDate),
    Convert(RawConvert),
    Rename(RawFieldMap),
    Remove(RawRemove),
    AddTag(RawAddTag),
    AddField(RawFieldMap),
    Replace(RawFieldMap),
    Lowercase(RawRemove),
    Uppercase(RawRemove),
    Strip(RawStrip),
    Drop(RawDrop),
}

const FILTER_NAMES: &[&str] = &[
    "json",
    "date",
    "convert",
    "rename",
    "remove",
    "add_tag",
    "add_field",
    "replace",
    "lowercase",
    "uppercase",
    "strip",
    "drop",
];

/// One `[[pipeline.filter]]` table: one key naming the filter, and an optional `if`.
struct RawStep {
    when: Option<Spanned<String>>,
    filter: RawFilter,
}

impl<'de> Deserialize<'de> for RawStep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawStep, D::Error> {
        d.deserialize_map(StepVisitor)
    }
}

struct StepVisitor;

impl<'de> Visitor<'de> for StepVisitor {
    type Value = RawStep;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table with one filter key (json, date, ...) and an optional `if`")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<RawStep, M::Error> {
        let mut when = None;
        let mut filter: Option<(String, RawFilter)> = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "if" {
                when = Some(map.next_value()?);
                continue;
            }
            if let Some((first, _)) = &filter {
                return Err(de::Error::custom(format!(
                    "`{key}`: a filter table holds one filter (it already has `{first}`); \
                     start another [[pipeline.filter]]"
                )));
            }
            let raw = match key.as_str() {
                "json" => RawFilter::Json(map.next_value()?),
                "date" => RawFilter::Date(map.next_value()?),
                "convert" => RawFilter::Convert(map.next_value()?),
                "rename" => RawFilter::Rename(map.next_value()?),
                "remove" => RawFilter::Remove(map.next_value()?),
                "add_tag" => RawFilter::AddTag(map.next_value()?),
                "add_field" => RawFilter::AddField(map.next_value()?),
                "replace" => RawFilter::Replace(map.next_value()?),
                "lowercase" => RawFilter::Lowercase(map.next_value()?),
                "uppercase" => RawFilter::Uppercase(map.next_value()?),
                "strip" => RawFilter::Strip(map.next_value()?),
                "drop" => RawFilter::Drop(map.next_value()?),
                other => return Err(de::Error::unknown_variant(other, FILTER_NAMES)),
            };
            filter = Some((key, raw));
        }
        match filter {
            Some((_, filter)) => Ok(RawStep { when, filter }),
            None => Err(de::Error::custom(
                "a filter table needs a filter key (json, date, convert, ...)",
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJson {
    source: String,
    target: Option<String>,
    tag_on_failure: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDate {
    field: String,
    formats: Vec<String>,
    target: Option<String>,
    timezone: Option<String>,
    tag_on_failure: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConvert {
    /// field -> type, in order (toml's `preserve_order`).
    fields: toml::Table,
    tag_on_failure: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFieldMap {
    fields: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemove {
    fields: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAddTag {
    tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStrip {
    fields: Vec<String>,
    tag_on_failure: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrop {
    field: Option<String>,
    #[serde(default)]
    values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    help: Option<String>,
    field: Option<String>,
    scale: Option<f64>,
    buckets: Option<Vec<f64>>,
    #[serde(default)]
    labels: Vec<RawLabel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLabel {
    name: String,
    field: Option<String>,
    values: Vec<String>,
}

/// The line of an array-of-tables entry's content: its span starts at the
/// `[[pipeline.filter]]` header, the problem is in the key under it.
fn entry_line(text: &str, start: usize) -> usize {
    let rest = &text[start.min(text.len())..];
    if !rest.starts_with("[[") {
        return line_of(text, start);
    }
    let mut line = line_of(text, start);
    for l in rest.lines().skip(1) {
        line += 1;
        let t = l.trim();
        if !t.is_empty() && !t.starts_with('#') {
            return line;
        }
    }
    line_of(text, start)
}

/// Reads `[pipeline]` from the file text (`None`: no file, the defaults). `index` and
/// `fingerprint` set in the environment (`env`) replace the file's.
pub(super) fn load(text: Option<&str>, env: &EnvText, problems: &mut Problems) -> PipelineSettings {
    let mut settings = PipelineSettings::qwen();
    let Some(text) = text else {
        apply_env(&mut settings, env, problems);
        return settings;
    };
    let raw: RawPipeline = match toml::from_str::<Document>(text) {
        Ok(doc) => doc.pipeline,
        Err(e) => {
            let at = e
                .span()
                .map(|s| format!(" (line {})", entry_line(text, s.start)));
            problems.push(format!(
                "pipeline{}: {}",
                at.unwrap_or_default(),
                e.message()
            ));
            return settings;
        }
    };
    if let Some(filters) = raw.filter {
        let mut compiled = Vec::with_capacity(filters.len());
        let mut lines = Vec::with_capacity(filters.len());
        for f in filters {
            let line = entry_line(text, f.span().start);
            let RawStep { when, filter } = f.into_inner();
            let when = match when.map(|w| compile_condition(text, w)).transpose() {
                Ok(w) => w,
                Err(e) => {
                    problems.push(format!("pipeline.filter (line {}): if: {}", e.0, e.1));
                    continue;
                }
            };
            match compile_filter(filter) {
                Ok(filter) => {
                    compiled.push(Step { filter, when });
                    lines.push(line);
                }
                Err(e) => problems.push(format!("pipeline.filter (line {line}): {e}")),
            }
        }
        settings.filters = compiled;
        check_removed_fields(&settings, &lines, problems);
    }
    if let Some(metrics) = raw.metric {
        settings.metrics.clear();
        for m in metrics {
            let line = entry_line(text, m.span().start);
            match compile_metric(m.into_inner()) {
                Ok(spec) => settings.metrics.push(spec),
                Err(e) => problems.push(format!("pipeline.metric (line {line}): {e}")),
            }
        }
        let mut names: Vec<&str> = settings.metrics.iter().map(|m| m.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            problems.push(format!("pipeline.metric: `{}` is defined twice", w[0]));
        }
    }
    // A key the environment sets replaces the file's, unread (as in every section).
    if let Some(index) = raw.index.filter(|_| !env.contains_key("pipeline.index")) {
        set_index(&mut settings, &index, problems);
    }
    if let Some(parts) = raw
        .fingerprint
        .filter(|_| !env.contains_key("pipeline.fingerprint"))
    {
        set_fingerprint(&mut settings, &parts, problems);
    }
    apply_env(&mut settings, env, problems);
    warn_client_chosen_index(&settings, problems);
    settings
}

/// `check-config` (and `serve`, in its log) warns when `pipeline.index` reads a field the
/// client sends and no filter sets: the client then picks the index. Names Elasticsearch
/// would refuse are dead-lettered either way, but any valid name (another team's index,
/// one new index per event) is the client's choice. The TLS peer's fields are set by
/// lumberd from the verified handshake, not by the client.
fn warn_client_chosen_index(settings: &PipelineSettings, problems: &mut Problems) {
    let tls_peer = FieldPath::parse("[@metadata][tls_peer]").expect("a valid built-in path");
    let set_by_a_filter = |field: &FieldPath| {
        // With or without an `if`: `if ![svc] { add_field ... }` is the usual fallback.
        settings.filters.iter().any(|step| match &step.filter {
            Filter::AddField { fields } => fields.iter().any(|(p, _)| field.is_within(p)),
            Filter::Rename { fields } => fields.iter().any(|(_, to)| field.is_within(to)),
            _ => false,
        })
    };
    for field in settings.index.fields() {
        if !field.is_within(&tls_peer) && !set_by_a_filter(field) {
            problems.warn(format!(
                "pipeline.index `{}` reads `{field}`, a field the client sends, with no filter \
                 setting it as a fallback: each client chooses its events' index (an invalid \
                 name makes the event a dead letter)",
                settings.index.source()
            ));
        }
    }
}

/// `LUMBERD_PIPELINE_INDEX` (taken as written) and `LUMBERD_PIPELINE_FINGERPRINT` (a
/// TOML array, or comma-separated; empty turns ids off).
fn apply_env(settings: &mut PipelineSettings, env: &EnvText, problems: &mut Problems) {
    if let Some(index) = env.get("pipeline.index") {
        set_index(settings, index, problems);
    }
    if let Some(text) = env.get("pipeline.fingerprint") {
        let parts: Vec<String> = match format!("v = {text}").parse::<toml::Table>() {
            Ok(t) if t["v"].is_array() => t["v"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => text
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        set_fingerprint(settings, &parts, problems);
    }
}

fn set_index(settings: &mut PipelineSettings, index: &str, problems: &mut Problems) {
    match Template::parse(index) {
        Ok(t) => settings.index = t,
        Err(e) => problems.key("pipeline.index", e),
    }
}

fn set_fingerprint<S: AsRef<str>>(
    settings: &mut PipelineSettings,
    parts: &[S],
    problems: &mut Problems,
) {
    if parts.is_empty() {
        settings.fingerprint = None;
        return;
    }
    match Fingerprint::parse(parts) {
        Ok(f) => settings.fingerprint = Some(f),
        Err(e) => problems.key("pipeline.fingerprint", e),
    }
}

fn path(text: &str) -> Result<FieldPath, String> {
    let p = FieldPath::parse(text)?;
    // `@timestamp` is always a timestamp string and `tags` a list of strings: a path
    // below either can never exist.
    let segs = p.segments();
    if segs.len() > 1 && segs[0].key() == "@timestamp" {
        return Err(format!("`{text}`: @timestamp has no fields inside it"));
    }
    if segs.len() > 1 && segs[0].key() == "tags" && segs[1].index().is_none() {
        return Err(format!(
            "`{text}`: tags is a list of strings, it has no fields"
        ));
    }
    Ok(p)
}

fn tags(given: Option<Vec<String>>, default: &str) -> Vec<Box<str>> {
    given
        .unwrap_or_else(|| vec![default.to_string()])
        .into_iter()
        .map(String::into_boxed_str)
        .collect()
}

fn string_pairs(table: &toml::Table) -> Result<Vec<(&str, &str)>, String> {
    table
        .iter()
        .map(|(k, v)| match v.as_str() {
            Some(s) => Ok((k.as_str(), s)),
            None => Err(format!("`{k}`: expected a string value, got {v}")),
        })
        .collect()
}

/// A filter's `if`, parsed: the error gives the file's line and the column inside the
/// condition.
fn compile_condition(text: &str, raw: Spanned<String>) -> Result<Condition, (usize, String)> {
    let start = raw.span().start;
    let cond = raw.into_inner();
    Condition::parse(&cond).map_err(|e| {
        let before = &cond[..e.offset.min(cond.len())];
        let line = line_of(text, start) + before.matches('\n').count();
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        (
            line,
            format!("column {column}: {} (in `{cond}`)", e.message),
        )
    })
}

fn compile_filter(raw: RawFilter) -> Result<Filter, String> {
    let raw_kind = match &raw {
        RawFilter::Uppercase(_) => "uppercase",
        _ => "",
    };
    Ok(match raw {
        RawFilter::Json(j) => Filter::Json {
            source: path(&j.source)?,
            target: j.target.as_deref().map(path).transpose()?,
            tag_on_failure: tags(j.tag_on_failure, JSON_FAILURE_TAG),
        },
        RawFilter::Date(d) => {
            if d.formats.is_empty() {
                return Err("date: `formats` is empty".into());
            }
            Filter::Date {
                field: path(&d.field)?,
                formats: d
                    .formats
                    .iter()
                    .map(|f| DateFormat::parse(f))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("date: {e}"))?,
                target: path(d.target.as_deref().unwrap_or("@timestamp"))?,
                timezone: match d.timezone {
                    Some(z) => Zone::parse(&z).map_err(|e| format!("date: timezone {e}"))?,
                    None => Zone::Utc,
                },
                tag_on_failure: tags(d.tag_on_failure, DATE_FAILURE_TAG),
            }
        }
        RawFilter::Convert(c) => Filter::Convert {
            fields: string_pairs(&c.fields)?
                .into_iter()
                .map(|(f, t)| {
                    Ok((
                        path(f)?,
                        Conversion::parse(t).map_err(|e| format!("convert `{f}`: {e}"))?,
                    ))
                })
                .collect::<Result<_, String>>()?,
            tag_on_failure: tags(c.tag_on_failure, MUTATE_FAILURE_TAG),
        },
        RawFilter::Rename(r) => Filter::Rename {
            fields: string_pairs(&r.fields)?
                .into_iter()
                .map(|(from, to)| Ok((path(from)?, path(to)?)))
                .collect::<Result<_, String>>()?,
        },
        RawFilter::Remove(r) => Filter::Remove {
            fields: r.fields.iter().map(|f| path(f)).collect::<Result<_, _>>()?,
        },
        RawFilter::AddTag(t) => Filter::AddTag {
            tags: t
                .tags
                .iter()
                .map(|s| Template::parse(s))
                .collect::<Result<_, _>>()?,
        },
        RawFilter::AddField(a) => Filter::AddField {
            fields: string_pairs(&a.fields)?
                .into_iter()
                .map(|(f, v)| Ok((path(f)?, Template::parse(v)?)))
                .collect::<Result<_, String>>()?,
        },
        RawFilter::Replace(a) => Filter::Replace {
            fields: string_pairs(&a.fields)?
                .into_iter()
                .map(|(f, v)| Ok((path(f)?, Template::parse(v)?)))
                .collect::<Result<_, String>>()?,
        },
        RawFilter::Lowercase(r) | RawFilter::Uppercase(r) => Filter::Case {
            upper: matches!(raw_kind, "uppercase"),
            fields: r.fields.iter().map(|f| path(f)).collect::<Result<_, _>>()?,
        },
        RawFilter::Strip(r) => Filter::Strip {
            fields: r.fields.iter().map(|f| path(f)).collect::<Result<_, _>>()?,
            tag_on_failure: tags(r.tag_on_failure, MUTATE_FAILURE_TAG),
        },
        RawFilter::Drop(d) => {
            if d.field.is_none() && !d.values.is_empty() {
                return Err("drop: `values` needs the `field` they are compared with".into());
            }
            Filter::Drop {
                field: d.field.as_deref().map(path).transpose()?,
                values: d.values.into_iter().map(String::into_boxed_str).collect(),
            }
        }
    })
}

fn compile_metric(raw: RawMetric) -> Result<MetricSpec, String> {
    let labels = raw
        .labels
        .into_iter()
        .map(|l| {
            Ok(LabelSpec {
                field: path(l.field.as_deref().unwrap_or(&l.name))?,
                name: l.name,
                values: l.values,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let kind = match raw.kind.as_str() {
        "counter" => {
            if raw.scale.is_some() || raw.buckets.is_some() {
                return Err(format!("`{}`: a counter has no scale or buckets", raw.name));
            }
            MetricKind::Counter {
                field: raw.field.as_deref().map(path).transpose()?,
            }
        }
        "histogram" => MetricKind::Histogram {
            field: path(raw.field.as_deref().ok_or_else(|| {
                format!("`{}`: a histogram needs the `field` it observes", raw.name)
            })?)?,
            scale: raw.scale.unwrap_or(1.0),
            buckets: raw
                .buckets
                .unwrap_or_else(|| prometheus::DEFAULT_BUCKETS.to_vec()),
        },
        other => return Err(format!("`{other}`: type must be counter or histogram")),
    };
    let spec = MetricSpec {
        help: raw
            .help
            .unwrap_or_else(|| format!("{} (from the logs)", raw.name)),
        name: raw.name,
        kind,
        labels,
    };
    spec.validate()?;
    Ok(spec)
}

/// A field read after a filter removed it (and nothing re-created it) can never exist:
/// almost always a filter order mistake.
fn check_removed_fields(settings: &PipelineSettings, lines: &[usize], problems: &mut Problems) {
    let mut removed: Vec<(FieldPath, usize)> = Vec::new();
    let mut check = |removed: &[(FieldPath, usize)], read: &FieldPath, who: String| {
        if let Some((gone, line)) = removed.iter().find(|(r, _)| read.is_within(r)) {
            problems.push(format!(
                "{who} reads `{read}`, which the remove filter on line {line} removed (`{gone}`) \
                 and nothing re-creates: it can never exist there"
            ));
        }
    };
    for (step, &line) in settings.filters.iter().zip(lines) {
        let filter = &step.filter;
        let who = format!("pipeline.filter (line {line}): {}", filter.name());
        for f in step.when.iter().flat_map(|c| c.fields()) {
            check(&removed, f, format!("{who} (its `if`)"));
        }
        let (reads, writes): (Vec<&FieldPath>, Vec<&FieldPath>) = match filter {
            Filter::Json { source, target, .. } => {
                if target.is_none() {
                    check(&removed, source, who);
                    // Parsed JSON can re-create any top-level field.
                    removed.clear();
                    continue;
                }
                (vec![source], target.iter().collect())
            }
            Filter::Date { field, target, .. } => (vec![field], vec![target]),
            Filter::Convert { fields, .. } => (fields.iter().map(|(f, _)| f).collect(), vec![]),
            Filter::Rename { fields } => (
                fields.iter().map(|(f, _)| f).collect(),
                fields.iter().map(|(_, t)| t).collect(),
            ),
            // A conditional remove may leave the field in place.
            Filter::Remove { fields } if step.when.is_some() => (vec![], fields.iter().collect()),
            Filter::Remove { fields } => {
                for f in fields {
                    removed.push((f.clone(), line));
                }
                continue;
            }
            Filter::AddTag { tags } => (tags.iter().flat_map(|t| t.fields()).collect(), vec![]),
            Filter::AddField { fields } => (
                fields.iter().flat_map(|(_, t)| t.fields()).collect(),
                fields.iter().map(|(f, _)| f).collect(),
            ),
            Filter::Replace { fields } => (
                fields.iter().flat_map(|(_, t)| t.fields()).collect(),
                fields.iter().map(|(f, _)| f).collect(),
            ),
            Filter::Case { fields, .. } | Filter::Strip { fields, .. } => {
                (fields.iter().collect(), vec![])
            }
            Filter::Drop { field, .. } => (field.iter().collect(), vec![]),
        };
        for r in reads {
            check(&removed, r, who.clone());
        }
        removed.retain(|(r, _)| !writes.iter().any(|w| w.is_within(r) || r.is_within(w)));
    }
    for f in settings.index.fields() {
        check(&removed, f, "pipeline.index".into());
    }
    for m in &settings.metrics {
        let fields = match &m.kind {
            MetricKind::Counter { field } => field.iter().collect::<Vec<_>>(),
            MetricKind::Histogram { field, .. } => vec![field],
        };
        for f in fields.into_iter().chain(m.labels.iter().map(|l| &l.field)) {
            check(&removed, f, format!("pipeline.metric `{}`", m.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{DEFAULT_FINGERPRINT, DEFAULT_INDEX};

    fn problems_of(text: &str) -> Vec<String> {
        let mut problems = Problems::default();
        load(Some(text), &EnvText::new(), &mut problems);
        problems.into_error().problems
    }

    #[test]
    fn unknown_filter_is_rejected_with_its_line() {
        let p = problems_of("[pipeline]\n\n[[pipeline.filter]]\njsn = { source = \"message\" }\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("line 4") && p[0].contains("jsn"), "{p:?}");
    }

    #[test]
    fn bad_date_pattern_is_rejected_with_its_line() {
        let p = problems_of(
            "[[pipeline.filter]]\njson = { source = \"message\" }\n\n[[pipeline.filter]]\ndate = { field = \"t\", formats = [\"yyyy-qq\"] }\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("line 5") && p[0].contains("yyyy-qq"), "{p:?}");
    }

    #[test]
    fn field_paths_that_can_never_exist_are_rejected() {
        let p = problems_of(
            "[[pipeline.filter]]\nremove = { fields = [\"host\"] }\n[[pipeline.filter]]\nconvert = { fields = { \"host.name\" = \"string\" } }\n[[pipeline.filter]]\nrename = { fields = { \"@timestamp.x\" = \"y\" } }\n[[pipeline.filter]]\nremove = { fields = [\"a..b\"] }\n",
        );
        assert_eq!(p.len(), 3, "{p:#?}");
        for (line, what) in [
            ("line 4", "host.name"),
            ("line 6", "@timestamp"),
            ("line 8", "a..b"),
        ] {
            assert!(
                p.iter().any(|x| x.contains(line) && x.contains(what)),
                "expected a problem on {line} about {what}: {p:#?}"
            );
        }
    }

    #[test]
    fn a_field_re_created_after_removal_may_be_read() {
        let p = problems_of(
            "[[pipeline.filter]]\nremove = { fields = [\"host\"] }\n[[pipeline.filter]]\njson = { source = \"message\" }\n[[pipeline.filter]]\nconvert = { fields = { \"host\" = \"string\" } }\n",
        );
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn no_pipeline_section_means_the_qwen_pipeline() {
        let mut problems = Problems::default();
        let s = load(Some("[server]\n"), &EnvText::new(), &mut problems);
        assert!(problems.is_empty());
        assert_eq!(s.filters.len(), 4);
        assert_eq!(s.index.source(), DEFAULT_INDEX);
        assert!(s.fingerprint.is_some());
        let _ = DEFAULT_FINGERPRINT;
    }

    #[test]
    fn an_index_set_in_the_environment_replaces_the_files_unread() {
        let env: EnvText = [("pipeline.index".to_string(), "ok-%{+yyyy}".to_string())].into();
        let mut problems = Problems::default();
        let s = load(Some("[pipeline]\nindex = \"x-%{\"\n"), &env, &mut problems);
        assert!(problems.is_empty(), "{:?}", problems.into_error().problems);
        assert_eq!(s.index.source(), "ok-%{+yyyy}");
    }
}
