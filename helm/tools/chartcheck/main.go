// chartcheck checks what kubernetes-validate cannot: the chart's prometheus-operator
// objects and the PromQL in them and in the Grafana dashboard. It owns no chart logic.
//
//   - ServiceMonitor and PrometheusRule are decoded strictly (unknown fields are errors)
//     into the operator's own Go types, the offline equivalent of its CRD schemas; their
//     durations must parse as Prometheus durations.
//   - Every alert expression and every dashboard query must parse as PromQL, and every
//     series it selects must be in metrics.txt: the name, each label matched or grouped
//     by, and the value of a label whose values are listed there.
//
// Usage: chartcheck -metrics metrics.txt -dashboard lumberd.json MANIFEST.yaml...
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"

	monv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

// Labels Prometheus attaches to every series from its scrape target (the chart's
// ServiceMonitor), which any query may match on.
var targetLabels = map[string]bool{
	"job": true, "instance": true, "namespace": true, "pod": true,
	"service": true, "container": true, "endpoint": true,
}

// metric is one line of metrics.txt.
type metric struct {
	kind   string
	labels map[string][]string // label -> allowed values; nil: any value
}

type checker struct {
	metrics  map[string]metric
	problems []string
	exprs    int
}

func (c *checker) fail(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

func main() {
	metricsPath := flag.String("metrics", "", "metrics.txt: the metric list")
	dashboardPath := flag.String("dashboard", "", "Grafana dashboard JSON to check")
	flag.Parse()
	if *metricsPath == "" {
		fmt.Fprintln(os.Stderr, "chartcheck: -metrics is required")
		os.Exit(2)
	}
	metrics, err := readMetrics(*metricsPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chartcheck: %v\n", err)
		os.Exit(2)
	}
	c := &checker{metrics: metrics}
	objects := 0
	for _, path := range flag.Args() {
		n, err := c.checkManifests(path)
		if err != nil {
			c.fail("%s: %v", path, err)
		}
		objects += n
	}
	if *dashboardPath != "" {
		c.checkDashboard(*dashboardPath)
	}
	for _, p := range c.problems {
		fmt.Fprintf(os.Stderr, "chartcheck: %s\n", p)
	}
	fmt.Printf("chartcheck: %d prometheus-operator objects decoded strictly, %d PromQL expressions checked against %s, %d problems\n",
		objects, c.exprs, *metricsPath, len(c.problems))
	if len(c.problems) > 0 {
		os.Exit(1)
	}
}

// readMetrics reads "name type [label[=v1|v2...]]..." lines; # starts a comment.
func readMetrics(path string) (map[string]metric, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]metric{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		fields := strings.Fields(strings.SplitN(sc.Text(), "#", 2)[0])
		if len(fields) == 0 {
			continue
		}
		if len(fields) < 2 {
			return nil, fmt.Errorf("%s:%d: expected `name type [labels]`", path, line)
		}
		m := metric{kind: fields[1], labels: map[string][]string{}}
		switch m.kind {
		case "counter", "gauge", "histogram":
		default:
			return nil, fmt.Errorf("%s:%d: type %q is not counter, gauge or histogram", path, line, m.kind)
		}
		for _, l := range fields[2:] {
			name, values, found := strings.Cut(l, "=")
			if found {
				m.labels[name] = strings.Split(values, "|")
			} else {
				m.labels[name] = nil
			}
		}
		out[fields[0]] = m
	}
	return out, sc.Err()
}

// lookup finds the listed metric behind a series name (a histogram's _bucket, _sum
// and _count included) and the extra labels that series has.
func (c *checker) lookup(name string) (metric, []string, bool) {
	if m, ok := c.metrics[name]; ok {
		return m, nil, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if m, ok := c.metrics[base]; ok && m.kind == "histogram" {
				if suffix == "_bucket" {
					return m, []string{"le"}, true
				}
				return m, nil, true
			}
		}
	}
	return metric{}, nil, false
}

func (c *checker) checkManifests(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n := 0
	for i, doc := range splitDocuments(data) {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return n, fmt.Errorf("document %d: %v", i+1, err)
		}
		if err := json.Unmarshal(js, &head); err != nil || head.Kind == "" {
			continue
		}
		where := fmt.Sprintf("%s: %s/%s", path, head.Kind, head.Metadata.Name)
		switch head.Kind {
		case "ServiceMonitor":
			var sm monv1.ServiceMonitor
			if c.decode(where, head.APIVersion, js, &sm) {
				n++
				for j, ep := range sm.Spec.Endpoints {
					c.duration(fmt.Sprintf("%s: endpoints[%d].interval", where, j), string(ep.Interval))
					c.duration(fmt.Sprintf("%s: endpoints[%d].scrapeTimeout", where, j), string(ep.ScrapeTimeout))
				}
			}
		case "PrometheusRule":
			var pr monv1.PrometheusRule
			if c.decode(where, head.APIVersion, js, &pr) {
				n++
				c.checkRules(where, &pr)
			}
		}
	}
	return n, nil
}

// decode is the offline stand-in for the CRD's structural schema: the object must
// decode into the operator's types with no field left over.
func (c *checker) decode(where, apiVersion string, js []byte, into any) bool {
	if apiVersion != monv1.SchemeGroupVersion.String() {
		c.fail("%s: apiVersion %q, expected %q", where, apiVersion, monv1.SchemeGroupVersion.String())
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		c.fail("%s: does not decode into prometheus-operator's types: %v", where, err)
		return false
	}
	return true
}

func (c *checker) duration(where, d string) {
	if d == "" {
		return
	}
	if _, err := model.ParseDuration(d); err != nil {
		c.fail("%s: %q is not a Prometheus duration: %v", where, d, err)
	}
}

func (c *checker) checkRules(where string, pr *monv1.PrometheusRule) {
	seen := map[string]bool{}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			at := fmt.Sprintf("%s: group %s, rule %s", where, g.Name, name)
			if name == "" {
				c.fail("%s: a rule with neither alert nor record", at)
			}
			if seen[name] {
				c.fail("%s: defined twice", at)
			}
			seen[name] = true
			if r.For != nil {
				c.duration(at+": for", string(*r.For))
			}
			if r.Alert != "" && r.Annotations["summary"] == "" {
				c.fail("%s: no summary annotation", at)
			}
			c.checkExpr(at, r.Expr.String())
		}
	}
}

var grafanaVar = regexp.MustCompile(`\$\{?(\w+)(:\w+)?\}?`)
var labelValues = regexp.MustCompile(`^label_values\((.*),\s*(\w+)\)$`)

// checkDashboard parses the dashboard and checks every query in it: panel targets
// (nested rows included) and query variables.
func (c *checker) checkDashboard(path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		c.fail("%v", err)
		return
	}
	var dash map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&dash); err != nil {
		c.fail("%s: not JSON: %v", path, err)
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		c.fail("%s: data after the dashboard object", path)
	}
	for _, key := range []string{"title", "uid", "panels", "templating", "schemaVersion"} {
		if _, ok := dash[key]; !ok {
			c.fail("%s: no %q", path, key)
		}
	}
	ids := map[float64]bool{}
	queries := 0
	var walk func(panels []any)
	walk = func(panels []any) {
		for _, p := range panels {
			panel, _ := p.(map[string]any)
			title, _ := panel["title"].(string)
			if id, ok := panel["id"].(float64); ok {
				if ids[id] {
					c.fail("%s: panel id %v used twice", path, id)
				}
				ids[id] = true
			}
			targets, _ := panel["targets"].([]any)
			for _, t := range targets {
				target, _ := t.(map[string]any)
				expr, _ := target["expr"].(string)
				if expr == "" {
					c.fail("%s: panel %q: a target without expr", path, title)
					continue
				}
				queries++
				c.checkExpr(fmt.Sprintf("%s: panel %q", path, title), expandGrafana(expr))
			}
			if nested, ok := panel["panels"].([]any); ok {
				walk(nested)
			}
		}
	}
	panels, _ := dash["panels"].([]any)
	walk(panels)
	if queries == 0 {
		c.fail("%s: no panel queries", path)
	}
	templating, _ := dash["templating"].(map[string]any)
	vars, _ := templating["list"].([]any)
	for _, v := range vars {
		variable, _ := v.(map[string]any)
		if variable["type"] != "query" {
			continue
		}
		name, _ := variable["name"].(string)
		var query string
		switch q := variable["query"].(type) {
		case string:
			query = q
		case map[string]any:
			query, _ = q["query"].(string)
		}
		at := fmt.Sprintf("%s: variable %q", path, name)
		m := labelValues.FindStringSubmatch(strings.TrimSpace(query))
		if m == nil {
			c.checkExpr(at, expandGrafana(query))
			continue
		}
		c.checkExpr(at, expandGrafana(m[1]))
		c.checkExprLabels(at, expandGrafana(m[1]), m[2])
	}
}

// expandGrafana replaces dashboard variables with values PromQL accepts where they
// stand: a range for the interval variables, a label value for the others.
func expandGrafana(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		name := grafanaVar.FindStringSubmatch(v)[1]
		switch name {
		case "__rate_interval", "__interval", "__range":
			return "5m"
		}
		return "x"
	})
}

// selectors lists the series an expression selects, and the aggregations in it.
func parse(expr string) (parser.Expr, []*parser.VectorSelector, []*parser.AggregateExpr, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, nil, nil, err
	}
	var vs []*parser.VectorSelector
	var aggs []*parser.AggregateExpr
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			vs = append(vs, n)
		case *parser.AggregateExpr:
			aggs = append(aggs, n)
		}
		return nil
	})
	return e, vs, aggs, nil
}

func (c *checker) checkExpr(where, expr string) {
	c.exprs++
	_, selectors, aggs, err := parse(expr)
	if err != nil {
		c.fail("%s: PromQL does not parse: %v\n    %s", where, err, expr)
		return
	}
	for _, vs := range selectors {
		m, extra, ok := c.lookup(vs.Name)
		if !ok {
			c.fail("%s: metric %q is not in the metric list", where, vs.Name)
			continue
		}
		for _, matcher := range vs.LabelMatchers {
			if matcher.Name == labels.MetricName || targetLabels[matcher.Name] || contains(extra, matcher.Name) {
				continue
			}
			values, known := m.labels[matcher.Name]
			switch {
			case !known:
				c.fail("%s: %s has no label %q (metric list: %s)", where, vs.Name, matcher.Name, labelNames(m))
			case values != nil && matcher.Type == labels.MatchEqual || values != nil && matcher.Type == labels.MatchNotEqual:
				if !contains(values, matcher.Value) {
					c.fail("%s: %s{%s=%q}: the value is not one of %s", where, vs.Name, matcher.Name, matcher.Value, strings.Join(values, "|"))
				}
			}
		}
	}
	for _, agg := range aggs {
		if agg.Without {
			continue
		}
		allowed := map[string]bool{}
		parser.Inspect(agg.Expr, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				if m, extra, ok := c.lookup(vs.Name); ok {
					for l := range m.labels {
						allowed[l] = true
					}
					for _, l := range extra {
						allowed[l] = true
					}
				}
			}
			return nil
		})
		for _, l := range agg.Grouping {
			if !allowed[l] && !targetLabels[l] {
				c.fail("%s: grouped by %q, a label none of its series has", where, l)
			}
		}
	}
}

// checkExprLabels checks that a label_values() variable reads a label its series has.
func (c *checker) checkExprLabels(where, expr, label string) {
	_, selectors, _, err := parse(expr)
	if err != nil {
		return // reported by checkExpr
	}
	for _, vs := range selectors {
		if m, _, ok := c.lookup(vs.Name); ok {
			if _, has := m.labels[label]; !has && !targetLabels[label] {
				c.fail("%s: label_values of %q, which %s does not have", where, label, vs.Name)
			}
		}
	}
}

func labelNames(m metric) string {
	var names []string
	for l := range m.labels {
		names = append(names, l)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// splitDocuments splits a multi-document YAML stream on its "---" lines.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur []byte
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		if t := bytes.TrimRight(line, " \r\n"); bytes.Equal(t, []byte("---")) {
			docs = append(docs, cur)
			cur = nil
			continue
		}
		cur = append(cur, line...)
	}
	return append(docs, cur)
}
