#!/usr/bin/env python3
"""Writes kibana/qwen-logs.ndjson: the Kibana 8.11 saved objects for lumberd's indices.

    python3 kibana/generate.py        # rewrites kibana/qwen-logs.ndjson

Edit the objects here, not in the .ndjson. tests/kibana.rs checks the file against the
mappings lumberd creates in a real Elasticsearch. Objects (ids are stable, so an import
with overwrite=true replaces them):

- index-pattern qwen-logs: the events, `qwen-logs-*` without the dead-letter indices
  (which `qwen-logs-*` also matches), time field @timestamp
- index-pattern qwen-logs-deadletter: `qwen-logs-deadletter-*`, where lumberd's
  Elasticsearch output writes every dead letter (refused by Elasticsearch, or not a
  JSON object), time field @timestamp
- search qwen-latest-errors (`level : "ERROR"`), search lumberd-dead-letters
- lens: requests over time by status, error rate (%), inference_time_ms p50/p95/p99 over
  time, response_length distribution, top failing prompts
- dashboard qwen-inference: the five Lens panels and both searches
"""
import json
import os

VERSION = "8.11.3"
CORE = "8.8.0"  # coreMigrationVersion of Kibana 8.8 .. 8.13
TYPE_VERSION = {"index-pattern": "8.0.0", "search": "8.0.0", "lens": "8.9.0", "dashboard": "8.9.0"}
EVENTS = "qwen-logs"
DEAD = "qwen-logs-deadletter"


def saved(type_, id_, attributes, references):
    return {
        "type": type_,
        "id": id_,
        "attributes": attributes,
        "references": references,
        "coreMigrationVersion": CORE,
        "typeMigrationVersion": TYPE_VERSION[type_],
        "managed": False,
    }


def data_view(id_, title, name):
    return saved("index-pattern", id_, {
        "title": title,
        "name": name,
        "timeFieldName": "@timestamp",
        "allowNoIndex": True,
        "fieldAttrs": "{}",
        "fieldFormatMap": "{}",
        "fields": "[]",
        "runtimeFieldMap": "{}",
        "sourceFilters": "[]",
        "typeMeta": "{}",
    }, [])


def kql(query):
    return {"query": query, "language": "kuery"}


def search(id_, title, description, view, query, columns):
    source = {"query": kql(query), "filter": [],
              "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index"}
    return saved("search", id_, {
        "title": title,
        "description": description,
        "columns": columns,
        "sort": [["@timestamp", "desc"]],
        "grid": {},
        "hideChart": False,
        "isTextBasedQuery": False,
        "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(source, ensure_ascii=False)},
    }, [{"type": "index-pattern", "id": view, "name": "kibanaSavedObjectMeta.searchSourceJSON.index"}])


# ---- Lens columns ------------------------------------------------------------------------

def date_histogram():
    return {"label": "@timestamp", "dataType": "date", "operationType": "date_histogram",
            "sourceField": "@timestamp", "isBucketed": True, "scale": "interval",
            "params": {"interval": "auto", "includeEmptyRows": True, "dropPartials": False}}


def count(label, filter_=None):
    c = {"label": label, "dataType": "number", "operationType": "count", "isBucketed": False,
         "scale": "ratio", "sourceField": "___records___", "params": {"emptyAsNull": True},
         "customLabel": True}
    if filter_ is not None:
        c["filter"] = kql(filter_)
    return c


def terms(field, size, order_by):
    return {"label": f"Top {size} values of {field}", "dataType": "string", "operationType": "terms",
            "scale": "ordinal", "sourceField": field, "isBucketed": True,
            "params": {"size": size, "orderBy": {"type": "column", "columnId": order_by},
                       "orderDirection": "desc", "otherBucket": True, "missingBucket": False,
                       "parentFormat": {"id": "terms"}, "include": [], "exclude": [],
                       "includeIsRegex": False, "excludeIsRegex": False}}


def percentile(field, p):
    return {"label": f"p{p} {field}", "dataType": "number", "operationType": "percentile",
            "sourceField": field, "isBucketed": False, "scale": "ratio",
            "params": {"percentile": p}, "customLabel": True}


def histogram(field):
    return {"label": field, "dataType": "number", "operationType": "range", "sourceField": field,
            "isBucketed": True, "scale": "interval",
            "params": {"type": "histogram", "ranges": [{"from": 0, "to": 1000, "label": ""}],
                       "maxBars": "auto", "includeEmptyRows": True}}


def ratio_formula(col, label, numerator_kql):
    """Lens' stored form of the formula `count(kql='<numerator>') / count()` in percent:
    the formula column and the hidden columns it compiles to (X0, X1, X2)."""
    text = f"count(kql='{numerator_kql}') / count()"
    part = f"Part of {label}"
    return {
        col + "X0": dict(count(part, numerator_kql)),
        col + "X1": dict(count(part)),
        col + "X2": {"label": part, "dataType": "number", "operationType": "math",
                     "isBucketed": False, "scale": "ratio",
                     "params": {"tinymathAst": {"type": "function", "name": "divide",
                                                "args": [col + "X0", col + "X1"],
                                                "location": {"min": 0, "max": len(text)},
                                                "text": text}},
                     "references": [col + "X0", col + "X1"], "customLabel": True},
        col: {"label": label, "dataType": "number", "operationType": "formula",
              "isBucketed": False, "scale": "ratio",
              "params": {"formula": text, "isFormulaBroken": False,
                         "format": {"id": "percent", "params": {"decimals": 1}}},
              "references": [col + "X2"], "customLabel": True},
    }


def xy(series, x, ys, split=None):
    layer = {"layerId": "layer1", "layerType": "data", "seriesType": series, "xAccessor": x,
             "accessors": ys}
    if split:
        layer["splitAccessor"] = split
    return {"legend": {"isVisible": True, "position": "right"}, "valueLabels": "hide",
            "fittingFunction": "None", "preferredSeriesType": series, "layers": [layer],
            "axisTitlesVisibilitySettings": {"x": True, "yLeft": True, "yRight": True},
            "tickLabelsVisibilitySettings": {"x": True, "yLeft": True, "yRight": True},
            "gridlinesVisibilitySettings": {"x": True, "yLeft": True, "yRight": True}}


def lens(id_, title, description, vis_type, columns, order, visualization, query=""):
    state = {
        "visualization": visualization,
        "query": kql(query),
        "filters": [],
        "datasourceStates": {"formBased": {"layers": {"layer1": {
            "columns": columns, "columnOrder": order, "incompleteColumns": {}, "sampling": 1}}},
            "textBased": {"layers": {}}},
        "internalReferences": [],
        "adHocDataViews": {},
    }
    return saved("lens", id_, {"title": title, "description": description,
                               "visualizationType": vis_type, "state": state},
                 [{"type": "index-pattern", "id": EVENTS, "name": "indexpattern-datasource-layer-layer1"}])


def objects():
    out = [
        data_view(EVENTS, "qwen-logs-*,-qwen-logs-deadletter-*", "qwen-logs-*"),
        data_view(DEAD, "qwen-logs-deadletter-*", "lumberd dead letters (qwen-logs-deadletter-*)"),
        search("qwen-latest-errors", "Qwen: latest errors",
               "Inference requests logged at ERROR, newest first.", EVENTS, 'level : "ERROR"',
               ["level", "status", "request_id", "prompt", "inference_time_ms", "response_length",
                "log.file.path"]),
        search("lumberd-dead-letters", "lumberd: dead letters",
               "Events lumberd could not store as they were (refused by Elasticsearch, or not a "
               "JSON object), newest first; event.original holds the event.", DEAD, "",
               ["error.status", "error.type", "error.reason", "original_index", "original_id"]),
    ]
    cols = {"time": date_histogram(), "count": count("Requests"),
            "status": terms("status", 10, "count")}
    out.append(lens("qwen-requests-by-status", "Requests over time by status",
                    "Logged inference requests per interval, stacked by status.", "lnsXY", cols,
                    ["status", "time", "count"], xy("bar_stacked", "time", ["count"], "status")))
    cols = {"time": date_histogram(), **ratio_formula("rate", "Error rate", 'status : "error"')}
    out.append(lens("qwen-error-rate", "Error rate (%)",
                    "Requests with status error over all requests, per interval.", "lnsXY", cols,
                    ["time", "rate", "rateX0", "rateX1", "rateX2"], xy("line", "time", ["rate"])))
    cols = {"time": date_histogram(), **{f"p{p}": percentile("inference_time_ms", p) for p in (50, 95, 99)}}
    out.append(lens("qwen-latency-percentiles", "inference_time_ms p50 / p95 / p99",
                    "Inference time percentiles (milliseconds) per interval.", "lnsXY", cols,
                    ["time", "p50", "p95", "p99"], xy("line", "time", ["p50", "p95", "p99"])))
    cols = {"length": histogram("response_length"), "count": count("Requests")}
    out.append(lens("qwen-response-length", "response_length distribution",
                    "Requests by response length.", "lnsXY", cols, ["length", "count"],
                    xy("bar", "length", ["count"])))
    cols = {"prompt": terms("prompt.keyword", 10, "count"), "count": count("Failed requests")}
    table = {"layerId": "layer1", "layerType": "data",
             "columns": [{"columnId": "prompt"}, {"columnId": "count"}]}
    out.append(lens("qwen-top-failing-prompts", "Top failing prompts",
                    "The prompts of requests with status error, most frequent first (prompts "
                    "longer than 256 characters are not in prompt.keyword).", "lnsDatatable",
                    cols, ["prompt", "count"], table, query='status : "error"'))

    panels, references = [], []
    layout = [  # (object, type, x, y, w, h)
        ("qwen-requests-by-status", "lens", 0, 0, 24, 15),
        ("qwen-error-rate", "lens", 24, 0, 24, 15),
        ("qwen-latency-percentiles", "lens", 0, 15, 24, 15),
        ("qwen-response-length", "lens", 24, 15, 24, 15),
        ("qwen-top-failing-prompts", "lens", 0, 30, 20, 15),
        ("qwen-latest-errors", "search", 20, 30, 28, 15),
        ("lumberd-dead-letters", "search", 0, 45, 48, 12),
    ]
    for i, (obj, type_, x, y, w, h) in enumerate(layout, start=1):
        panels.append({"version": VERSION, "type": type_,
                       "gridData": {"x": x, "y": y, "w": w, "h": h, "i": str(i)},
                       "panelIndex": str(i), "embeddableConfig": {"enhancements": {}},
                       "panelRefName": f"panel_{i}"})
        references.append({"type": type_, "id": obj, "name": f"{i}:panel_{i}"})
    out.append(saved("dashboard", "qwen-inference", {
        "title": "Qwen inference",
        "description": "Qwen2.5 inference logs shipped by Filebeat through lumberd: request "
                       "rate, errors, latency, response sizes, failing prompts, dead letters.",
        "panelsJSON": json.dumps(panels),
        "optionsJSON": json.dumps({"useMargins": True, "syncColors": False, "syncCursor": True,
                                   "syncTooltips": False, "hidePanelTitles": False}),
        "timeRestore": True,
        "timeFrom": "now-24h",
        "timeTo": "now",
        "refreshInterval": {"pause": False, "value": 60000},
        "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps({"query": kql(""), "filter": []})},
    }, references))
    return out


if __name__ == "__main__":
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "qwen-logs.ndjson")
    with open(path, "w", encoding="utf-8") as f:
        for o in objects():
            f.write(json.dumps(o, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {path}")
