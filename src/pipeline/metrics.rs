//! Metrics derived from the logs themselves (what the model service's team watches in
//! Kibana, available without it): counters and histograms over configured fields,
//! exported with lumberd's own metrics.
//!
//! Label values are bounded: each label has a configured set of values, and anything
//! else (including a missing field) is counted as `other`, so a client cannot grow the
//! number of series. Every label combination is created at start, which makes
//! recording an event an index computation and an atomic add, with no lock or hashing.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

use super::doc::Doc;
use super::path::FieldPath;
use super::value::Value;

/// The label value for anything outside a label's configured set.
pub const OTHER: &str = "other";
/// Series per metric at most (the product of the label set sizes, `other` included).
pub const MAX_SERIES_PER_METRIC: usize = 10_000;

#[derive(Debug, Clone)]
pub struct LabelSpec {
    pub name: String,
    pub field: FieldPath,
    pub values: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum MetricKind {
    /// Counts events that have `field` (every event when `None`).
    Counter { field: Option<FieldPath> },
    /// Observes the numeric value of `field` times `scale` (e.g. 0.001 for ms -> s).
    Histogram {
        field: FieldPath,
        scale: f64,
        buckets: Vec<f64>,
    },
}

#[derive(Debug, Clone)]
pub struct MetricSpec {
    pub name: String,
    pub help: String,
    pub kind: MetricKind,
    pub labels: Vec<LabelSpec>,
}

impl MetricSpec {
    /// Checks what Prometheus and the series bound require.
    pub fn validate(&self) -> Result<(), String> {
        let valid_name = |s: &str| {
            let mut chars = s.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        if !valid_name(&self.name) {
            return Err(format!("`{}`: not a Prometheus metric name", self.name));
        }
        let mut series = 1usize;
        for l in &self.labels {
            if !valid_name(&l.name) || l.name.contains(':') || l.name.starts_with("__") {
                return Err(format!("`{}`: not a Prometheus label name", l.name));
            }
            if l.values.iter().any(|v| v == OTHER) {
                return Err(format!("label `{}`: `{OTHER}` is reserved", l.name));
            }
            series = series.saturating_mul(l.values.len() + 1);
        }
        if series > MAX_SERIES_PER_METRIC {
            return Err(format!(
                "`{}`: {series} label combinations, more than {MAX_SERIES_PER_METRIC}",
                self.name
            ));
        }
        if let MetricKind::Histogram { buckets, scale, .. } = &self.kind {
            if buckets.is_empty() || buckets.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("`{}`: buckets must be increasing", self.name));
            }
            if !scale.is_finite() || *scale == 0.0 {
                return Err(format!("`{}`: scale must be a non-zero number", self.name));
            }
        }
        Ok(())
    }
}

enum Series {
    Counter(Vec<IntCounter>),
    Histogram(Vec<Histogram>),
}

struct Metric {
    spec: MetricSpec,
    series: Series,
}

/// The log-derived metrics of one pipeline.
pub struct LogMetrics {
    metrics: Vec<Metric>,
}

impl std::fmt::Debug for LogMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_list()
            .entries(self.metrics.iter().map(|m| &m.spec.name))
            .finish()
    }
}

impl LogMetrics {
    pub fn new(specs: &[MetricSpec], registry: &Registry) -> prometheus::Result<LogMetrics> {
        let mut metrics = Vec::with_capacity(specs.len());
        for spec in specs {
            let names: Vec<&str> = spec.labels.iter().map(|l| l.name.as_str()).collect();
            let combos = combinations(&spec.labels);
            let series = match &spec.kind {
                MetricKind::Counter { .. } => {
                    let vec = IntCounterVec::new(Opts::new(&spec.name, &spec.help), &names)?;
                    registry.register(Box::new(vec.clone()))?;
                    Series::Counter(
                        combos
                            .iter()
                            .map(|c| vec.with_label_values(&refs(c)))
                            .collect(),
                    )
                }
                MetricKind::Histogram { buckets, .. } => {
                    let opts = HistogramOpts::new(&spec.name, &spec.help).buckets(buckets.clone());
                    let vec = HistogramVec::new(opts, &names)?;
                    registry.register(Box::new(vec.clone()))?;
                    Series::Histogram(
                        combos
                            .iter()
                            .map(|c| vec.with_label_values(&refs(c)))
                            .collect(),
                    )
                }
            };
            metrics.push(Metric {
                spec: spec.clone(),
                series,
            });
        }
        Ok(LogMetrics { metrics })
    }

    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    /// Records one event (after the filters ran).
    pub fn record(&self, doc: &mut Doc, text: &mut String) {
        for m in &self.metrics {
            match (&m.spec.kind, &m.series) {
                (MetricKind::Counter { field }, Series::Counter(series)) => {
                    if field.as_ref().is_some_and(|f| !doc.contains(f)) {
                        continue;
                    }
                    series[series_index(&m.spec.labels, doc, text)].inc();
                }
                (MetricKind::Histogram { field, scale, .. }, Series::Histogram(series)) => {
                    let bump = doc.bump;
                    let Some(v) = doc.get(field) else { continue };
                    v.expand(bump);
                    let Value::Number(n) = v else { continue };
                    let Ok(x) = n.parse::<f64>() else { continue };
                    series[series_index(&m.spec.labels, doc, text)].observe(x * scale);
                }
                _ => unreachable!("series built from the spec's kind"),
            }
        }
    }
}

/// Every label-value combination in mixed-radix order (`other` last in each label).
fn combinations(labels: &[LabelSpec]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = vec![Vec::new()];
    for l in labels {
        let values: Vec<String> = l
            .values
            .iter()
            .cloned()
            .chain(std::iter::once(OTHER.to_string()))
            .collect();
        out = out
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut c = prefix.clone();
                    c.push(v.clone());
                    c
                })
            })
            .collect();
    }
    out
}

fn refs(c: &[String]) -> Vec<&str> {
    c.iter().map(String::as_str).collect()
}

/// The index of the event's combination in [`combinations`] order.
fn series_index(labels: &[LabelSpec], doc: &mut Doc, text: &mut String) -> usize {
    let mut index = 0;
    for l in labels {
        let radix = l.values.len() + 1;
        text.clear();
        let position = match doc.get(&l.field) {
            Some(v) => {
                v.render(text);
                l.values.iter().position(|x| *x == **text)
            }
            None => None,
        };
        index = index * radix + position.unwrap_or(l.values.len());
    }
    index
}

/// The seed team's Kibana panels as metrics: requests by status and level, and the
/// inference time histogram (in seconds, the Prometheus base unit).
pub fn qwen_metrics() -> Vec<MetricSpec> {
    let path = |p: &str| FieldPath::parse(p).expect("a valid built-in path");
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let status = LabelSpec {
        name: "status".into(),
        field: path("status"),
        values: strings(&["success", "error", "failed", "timeout", "rejected"]),
    };
    let level = LabelSpec {
        name: "level".into(),
        field: path("level"),
        values: strings(&["DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL"]),
    };
    vec![
        MetricSpec {
            name: "qwen_requests_total".into(),
            help: "Inference requests logged by the model service (events with a request_id)."
                .into(),
            kind: MetricKind::Counter {
                field: Some(path("request_id")),
            },
            labels: vec![status.clone(), level],
        },
        MetricSpec {
            name: "qwen_inference_duration_seconds".into(),
            help: "Inference time logged by the model service (inference_time_ms / 1000).".into(),
            kind: MetricKind::Histogram {
                field: path("inference_time_ms"),
                scale: 0.001,
                buckets: vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
            },
            labels: vec![status],
        },
    ]
}
