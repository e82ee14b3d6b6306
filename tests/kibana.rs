//! kibana/qwen-logs.ndjson (data views, saved searches, Lens panels, the "Qwen inference"
//! dashboard) checked so that it cannot drift from what lumberd writes.
//!
//! Kibana itself cannot be installed here: no package registry these machines reach
//! serves it, so `POST /api/saved_objects/_import` is never run in the tests. Instead:
//! - every object parses, every reference resolves (dashboard panels to the Lens objects
//!   and searches, those to the data views, Lens layers and formula parts to columns),
//!   and the dashboard's grid is well formed;
//! - every field a panel, search, query or data view uses is checked against a real
//!   Elasticsearch 8.11.3 that lumberd set up and the real Filebeat filled (the user's
//!   config, Qwen lines and one that Elasticsearch refuses, hence a dead letter): the
//!   index templates lumberd installed (`GET _index_template`) and the field capabilities
//!   of the indices each data view names (`_field_caps`, which Kibana's data views read):
//!   a date for time fields and histograms, an aggregatable keyword for terms, an
//!   aggregatable number for percentiles and number histograms, a searchable field for
//!   queries, an existing field for a search's columns; and each data view's pattern
//!   resolves to the indices meant and no others.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;

use serde_json::Value;
use support::es::EsNode;
use support::filebeat::{Filebeat, SHIP_DEADLINE};
use support::qwen_log::{dead_letters_in_es, qwen_log_dir};

/// `(type, id)` -> the object, in file order.
fn saved_objects() -> BTreeMap<(String, String), Value> {
    let path = support::repo_root().join("kibana/qwen-logs.ndjson");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let o: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{}:{}: not JSON: {e}", path.display(), i + 1));
        let (Some(t), Some(id)) = (o["type"].as_str(), o["id"].as_str()) else {
            panic!("line {}: no type or id: {line}", i + 1);
        };
        let key = (t.to_string(), id.to_string());
        assert!(
            out.insert(key.clone(), o).is_none(),
            "{key:?} appears twice"
        );
    }
    out
}

/// A JSON document stored as a string attribute (`panelsJSON`, `searchSourceJSON`, ...).
fn json_attr(o: &Value, pointer: &str) -> Value {
    let s = o
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{}: {pointer} is not a string", o["id"]));
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{}: {pointer} is not JSON: {e}", o["id"]))
}

/// The object a reference named `name` of `o` points to.
fn referenced<'a>(
    all: &'a BTreeMap<(String, String), Value>,
    o: &Value,
    name: &str,
) -> Result<&'a Value, String> {
    let r = o["references"]
        .as_array()
        .and_then(|refs| refs.iter().find(|r| r["name"] == name))
        .ok_or_else(|| format!("{}: no reference named {name:?}", o["id"]))?;
    let key = (
        r["type"].as_str().unwrap_or("").to_string(),
        r["id"].as_str().unwrap_or("").to_string(),
    );
    all.get(&key).ok_or_else(|| {
        format!(
            "{}: reference {name:?} to {key:?}, which is not in the file",
            o["id"]
        )
    })
}

/// The field names a KQL query tests (`status : "error" and level:ERROR` -> status,
/// level): the word before each `:` outside quotes.
fn kql_fields(query: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut in_quotes, mut word, mut last) = (false, String::new(), String::new());
    for c in query.chars() {
        if in_quotes {
            in_quotes = c != '"';
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                word.clear();
                last.clear();
            }
            ':' => {
                let w = if word.is_empty() { &last } else { &word };
                if !w.is_empty() {
                    out.push(w.clone());
                }
                word.clear();
                last.clear();
            }
            c if c.is_alphanumeric() || "_.@*".contains(c) => word.push(c),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    last = std::mem::take(&mut word);
                }
            }
            _ => {
                word.clear();
                last.clear();
            }
        }
    }
    out
}

/// What a use of a field needs of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    /// A time field or a date histogram.
    Date,
    /// terms: an aggregatable keyword.
    Keyword,
    /// percentiles, number histogram: an aggregatable number.
    Number,
    /// A query tests it.
    Searchable,
    /// A search shows it as a column.
    Exists,
}

/// Every `(data view id, field, need, where)` the objects use.
fn field_uses(all: &BTreeMap<(String, String), Value>) -> Vec<(String, String, Need, String)> {
    let mut uses = Vec::new();
    for ((t, id), o) in all {
        let a = &o["attributes"];
        match t.as_str() {
            "index-pattern" => {
                let f = a["timeFieldName"].as_str().unwrap_or("");
                uses.push((
                    id.clone(),
                    f.to_string(),
                    Need::Date,
                    format!("{id}: time field"),
                ));
            }
            "search" => {
                let view = referenced(all, o, "kibanaSavedObjectMeta.searchSourceJSON.index")
                    .unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                for c in a["columns"].as_array().unwrap() {
                    let c = c.as_str().unwrap();
                    uses.push((
                        view.clone(),
                        c.into(),
                        Need::Exists,
                        format!("{id}: column"),
                    ));
                }
                let source = json_attr(o, "/attributes/kibanaSavedObjectMeta/searchSourceJSON");
                for f in kql_fields(source["query"]["query"].as_str().unwrap_or("")) {
                    uses.push((view.clone(), f, Need::Searchable, format!("{id}: query")));
                }
            }
            "lens" => {
                let layers = a["state"]["datasourceStates"]["formBased"]["layers"]
                    .as_object()
                    .unwrap();
                let query = a["state"]["query"]["query"].as_str().unwrap_or("");
                for (layer_id, layer) in layers {
                    let view =
                        referenced(all, o, &format!("indexpattern-datasource-layer-{layer_id}"))
                            .unwrap()["id"]
                            .as_str()
                            .unwrap()
                            .to_string();
                    for f in kql_fields(query) {
                        uses.push((view.clone(), f, Need::Searchable, format!("{id}: query")));
                    }
                    for (col_id, col) in layer["columns"].as_object().unwrap() {
                        let at = format!("{id}: column {col_id}");
                        let field = col["sourceField"].as_str().unwrap_or("");
                        let need = match col["operationType"].as_str().unwrap_or("") {
                            "date_histogram" => Some(Need::Date),
                            "terms" => Some(Need::Keyword),
                            "percentile" | "range" | "average" | "sum" | "median" => {
                                Some(Need::Number)
                            }
                            _ => None,
                        };
                        if let Some(need) = need {
                            uses.push((view.clone(), field.into(), need, at.clone()));
                        }
                        if let Some(q) = col["filter"]["query"].as_str() {
                            for f in kql_fields(q) {
                                uses.push((view.clone(), f, Need::Searchable, at.clone()));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    uses
}

#[test]
fn kibana_objects_parse_and_every_reference_resolves() {
    assert_eq!(
        kql_fields(r#"status : "error: x" and level:ERROR or (log.file.path : *)"#),
        ["status", "level", "log.file.path"]
    );
    let all = saved_objects();
    let mut problems = String::new();
    let types: BTreeSet<&str> = all.keys().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        BTreeSet::from(["dashboard", "index-pattern", "lens", "search"]),
        "object types"
    );
    for ((t, id), o) in &all {
        for k in ["coreMigrationVersion", "typeMigrationVersion"] {
            if !o[k].is_string() {
                let _ = writeln!(
                    problems,
                    "{t} {id}: no {k} (Kibana would migrate it from 7.x)"
                );
            }
        }
        for r in o["references"].as_array().unwrap() {
            if let Err(e) = referenced(&all, o, r["name"].as_str().unwrap_or("")) {
                let _ = writeln!(problems, "{e}");
            }
        }
    }
    // Lens: a reference per layer, columnOrder = the columns, formula parts and
    // accessors name columns of the layer.
    for ((_, id), o) in all.iter().filter(|((t, _), _)| t == "lens") {
        let state = &o["attributes"]["state"];
        let layers = state["datasourceStates"]["formBased"]["layers"]
            .as_object()
            .unwrap();
        for (layer_id, layer) in layers {
            let name = format!("indexpattern-datasource-layer-{layer_id}");
            match referenced(&all, o, &name) {
                Ok(v) if v["type"] == "index-pattern" => {}
                Ok(v) => {
                    let _ = writeln!(problems, "{id}: {name} is a {}", v["type"]);
                }
                Err(e) => {
                    let _ = writeln!(problems, "{e}");
                }
            }
            let cols = layer["columns"].as_object().unwrap();
            let ids: BTreeSet<&str> = cols.keys().map(String::as_str).collect();
            let order: BTreeSet<&str> = layer["columnOrder"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            if ids != order {
                let _ = writeln!(problems, "{id}: columnOrder {order:?} vs columns {ids:?}");
            }
            for (c, col) in cols {
                let parts = col["references"].as_array().cloned().unwrap_or_default();
                for p in parts.iter().filter_map(Value::as_str) {
                    if !ids.contains(p) {
                        let _ = writeln!(problems, "{id}: column {c} refers to a missing {p}");
                    }
                }
                if col["operationType"] == "terms" {
                    let by = col["params"]["orderBy"]["columnId"].as_str().unwrap_or("");
                    if !ids.contains(by) {
                        let _ = writeln!(problems, "{id}: terms {c} ordered by missing {by}");
                    }
                }
            }
            let vis = &state["visualization"];
            let mut accessors: Vec<&str> = Vec::new();
            for l in vis["layers"].as_array().into_iter().flatten() {
                accessors.extend(l["xAccessor"].as_str());
                accessors.extend(l["splitAccessor"].as_str());
                accessors.extend(
                    l["accessors"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(Value::as_str),
                );
            }
            for c in vis["columns"].as_array().into_iter().flatten() {
                accessors.extend(c["columnId"].as_str());
            }
            if accessors.is_empty() {
                let _ = writeln!(problems, "{id}: the visualization shows no column");
            }
            for a in accessors {
                if !ids.contains(a) {
                    let _ = writeln!(problems, "{id}: the visualization shows a missing {a}");
                }
            }
        }
    }
    // The dashboard: each panel resolves through `<panelIndex>:<panelRefName>`, the grid
    // is 48 wide and no two panels overlap.
    let dash = &all[&("dashboard".to_string(), "qwen-inference".to_string())];
    let panels = json_attr(dash, "/attributes/panelsJSON");
    json_attr(dash, "/attributes/optionsJSON");
    json_attr(dash, "/attributes/kibanaSavedObjectMeta/searchSourceJSON");
    let mut cells: BTreeMap<(i64, i64), String> = BTreeMap::new();
    let mut shown = BTreeSet::new();
    for p in panels.as_array().unwrap() {
        let index = p["panelIndex"].as_str().unwrap();
        let name = format!("{index}:{}", p["panelRefName"].as_str().unwrap_or(""));
        match referenced(&all, dash, &name) {
            Ok(target) if target["type"] == p["type"] => {
                shown.insert(target["id"].as_str().unwrap().to_string());
            }
            Ok(target) => {
                let _ = writeln!(
                    problems,
                    "panel {index} is a {} but points to a {}",
                    p["type"], target["type"]
                );
            }
            Err(e) => {
                let _ = writeln!(problems, "{e}");
            }
        }
        let g = &p["gridData"];
        let (x, y, w, h) = (
            g["x"].as_i64().unwrap(),
            g["y"].as_i64().unwrap(),
            g["w"].as_i64().unwrap(),
            g["h"].as_i64().unwrap(),
        );
        if g["i"] != p["panelIndex"] || x < 0 || w < 1 || h < 1 || x + w > 48 {
            let _ = writeln!(problems, "panel {index}: bad grid {g}");
        }
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), index.to_string()) {
                    let _ = writeln!(problems, "panels {other} and {index} overlap at {cx},{cy}");
                }
            }
        }
    }
    let want: BTreeSet<String> = [
        "qwen-requests-by-status",
        "qwen-error-rate",
        "qwen-latency-percentiles",
        "qwen-response-length",
        "qwen-top-failing-prompts",
        "qwen-latest-errors",
        "lumberd-dead-letters",
    ]
    .map(String::from)
    .into();
    if shown != want {
        let _ = writeln!(problems, "the dashboard shows {shown:?}, want {want:?}");
    }
    let uses = field_uses(&all);
    if !uses.iter().any(|u| u.2 == Need::Keyword) || !uses.iter().any(|u| u.2 == Need::Number) {
        let _ = writeln!(problems, "no terms or numeric panel found: {uses:?}");
    }
    assert!(problems.is_empty(), "kibana/qwen-logs.ndjson:\n{problems}");
}

/// The template lumberd installed, as `field -> type` (dotted paths, subfields too).
fn template_fields(node: &EsNode, name: &str) -> BTreeMap<String, String> {
    let (status, body) = node.request("GET", &format!("/_index_template/{name}"), None);
    assert_eq!(status, 200, "GET _index_template/{name}: {body}");
    let mappings = &body["index_templates"][0]["index_template"]["template"]["mappings"];
    let mut out = BTreeMap::new();
    fn walk(props: &Value, prefix: &str, out: &mut BTreeMap<String, String>) {
        for (k, v) in props.as_object().into_iter().flatten() {
            let path = format!("{prefix}{k}");
            if let Some(t) = v["type"].as_str() {
                out.insert(path.clone(), t.to_string());
            }
            walk(&v["properties"], &format!("{path}."), out);
            walk(&v["fields"], &format!("{path}."), out);
        }
    }
    walk(&mappings["properties"], "", &mut out);
    assert!(!out.is_empty(), "template {name} maps no field: {body}");
    out
}

/// `field -> [(type, searchable, aggregatable)]` over the indices `pattern` names.
fn field_caps(node: &EsNode, pattern: &str) -> BTreeMap<String, Vec<(String, bool, bool)>> {
    let (status, body) = node.request("GET", &format!("/{pattern}/_field_caps?fields=*"), None);
    assert_eq!(status, 200, "_field_caps of {pattern}: {body}");
    body["fields"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(f, types)| {
            let caps = types
                .as_object()
                .unwrap()
                .iter()
                .filter(|(t, _)| !t.starts_with('_') && *t != "object" && *t != "nested")
                .map(|(t, c)| {
                    (
                        t.clone(),
                        c["searchable"] == true,
                        c["aggregatable"] == true,
                    )
                })
                .collect();
            (f.clone(), caps)
        })
        .collect()
}

/// The indices a pattern resolves to.
fn resolve(node: &EsNode, pattern: &str) -> Vec<String> {
    let (status, body) = node.request("GET", &format!("/_resolve/index/{pattern}"), None);
    assert_eq!(status, 200, "_resolve/index/{pattern}: {body}");
    body["indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn kibana_panel_fields_exist_with_the_types_their_operations_need_in_lumberds_mappings() {
    let Some(node) = EsNode::start(&[]) else {
        return;
    };
    let all = saved_objects();
    // Real events: the real Filebeat ships Qwen lines and one line Elasticsearch refuses
    // (an object where the template maps an integer), which becomes a dead letter.
    let (_dir, path, _) = qwen_log_dir("kibana", 300);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    writeln!(
        f,
        r#"{{"timestamp":"2025-04-05T23:59:59Z","level":"ERROR","request_id":"req_refused","inference_time_ms":{{"ms":1}},"status":"error"}}"#
    )
    .unwrap();
    drop(f);
    let lumberd = support::es::lumberd_to(node.url()).start();
    let mut fb = Filebeat::user_config(&path, &lumberd).start();
    fb.wait_shipped(&[&path], SHIP_DEADLINE, &[&lumberd]);
    fb.stop();
    assert_eq!(
        dead_letters_in_es(&node),
        1,
        "the refused line must be a dead letter\n{}",
        fb.diagnosis(&[&lumberd])
    );
    node.count("*"); // refresh

    let mut problems = String::new();
    // Each data view names exactly the indices it is meant for.
    let views: BTreeMap<String, String> = all
        .iter()
        .filter(|((t, _), _)| t == "index-pattern")
        .map(|((_, id), o)| {
            (
                id.clone(),
                o["attributes"]["title"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (id, title) in &views {
        let indices = resolve(&node, title);
        let dead = indices
            .iter()
            .filter(|i| i.starts_with("qwen-logs-deadletter-"))
            .count();
        let events = indices.len() - dead;
        let ok = match id.as_str() {
            "qwen-logs" => events > 0 && dead == 0,
            "qwen-logs-deadletter" => events == 0 && dead > 0,
            _ => false,
        };
        if !ok {
            let _ = writeln!(problems, "data view {id} ({title}) resolves to {indices:?}");
        }
    }
    let templates = [
        ("qwen-logs", template_fields(&node, "qwen-logs")),
        (
            "qwen-logs-deadletter",
            template_fields(&node, "qwen-logs-deadletter"),
        ),
    ];
    let caps: BTreeMap<&String, _> = views
        .iter()
        .map(|(id, t)| (id, field_caps(&node, t)))
        .collect();
    let mut checked = 0;
    for (view, field, need, at) in field_uses(&all) {
        let Some(view_caps) = caps.get(&view) else {
            let _ = writeln!(problems, "{at}: unknown data view {view}");
            continue;
        };
        let Some(kinds) = view_caps.get(&field) else {
            let _ = writeln!(
                problems,
                "{at}: {field} is not a field of data view {view}'s indices"
            );
            continue;
        };
        if kinds.len() != 1 {
            let _ = writeln!(
                problems,
                "{at}: {field} has conflicting types in {view}: {kinds:?}"
            );
            continue;
        }
        let (t, searchable, aggregatable) = &kinds[0];
        let numeric = [
            "integer",
            "long",
            "short",
            "byte",
            "float",
            "double",
            "half_float",
            "scaled_float",
        ];
        let ok = match need {
            Need::Date => t == "date" && *aggregatable,
            Need::Keyword => t == "keyword" && *aggregatable,
            Need::Number => numeric.contains(&t.as_str()) && *aggregatable,
            Need::Searchable => *searchable,
            Need::Exists => true,
        };
        if !ok {
            let _ = writeln!(
                problems,
                "{at}: {field} is {t} (searchable {searchable}, aggregatable {aggregatable}) in {view}, which {need:?} does not allow"
            );
        }
        // Where lumberd's template maps the field, the indices must have its type: the
        // dashboard is checked against the template, not a dynamic mapping that happened.
        let template = &templates.iter().find(|(v, _)| *v == view).unwrap().1;
        match template.get(&field) {
            Some(tt) if tt != t => {
                let _ = writeln!(
                    problems,
                    "{at}: {field} is {tt} in the template but {t} in the indices"
                );
            }
            None if need != Need::Exists && field != "log.file.path" => {
                let _ = writeln!(
                    problems,
                    "{at}: {field} is not in lumberd's {view} template"
                );
            }
            _ => {}
        }
        checked += 1;
    }
    assert!(
        problems.is_empty(),
        "kibana/qwen-logs.ndjson does not fit lumberd's indices:\n{problems}\ntemplates: {templates:?}"
    );
    assert!(checked >= 20, "only {checked} field uses checked");
    eprintln!("kibana: {checked} field uses checked against templates and _field_caps");
}
