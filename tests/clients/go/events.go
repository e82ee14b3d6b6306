package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// Event is one Filebeat-shaped event. The field order follows what Filebeat's
// encoder emits (timestamp first); the server must not care about order anyway.
type Event struct {
	Timestamp string `json:"@timestamp"`
	Message   string `json:"message"`
	Log       struct {
		File struct {
			Path string `json:"path"`
		} `json:"file"`
		Offset int64 `json:"offset"`
	} `json:"log"`
	Host struct {
		Name string `json:"name"`
	} `json:"host"`
	Agent struct {
		Type string `json:"type"`
	} `json:"agent"`
	ECS struct {
		Version string `json:"version"`
	} `json:"ecs"`
	TestID string `json:"test_id"`
}

// inferenceLine is one line of the inference service's own JSON log, which Filebeat
// ships verbatim in "message".
type inferenceLine struct {
	Timestamp       string `json:"timestamp"`
	Level           string `json:"level"`
	RequestID       string `json:"request_id"`
	Prompt          string `json:"prompt"`
	ResponseLength  int    `json:"response_length"`
	InferenceTimeMS int    `json:"inference_time_ms"`
	Status          string `json:"status"`
}

// The @timestamp of event g (0-based over the whole run) cycles through these
// anchors, plus g milliseconds, so that every run spans three UTC days and has
// events a few milliseconds either side of midnight 2025-04-05/06.
var anchors = []time.Time{
	time.Date(2025, 4, 5, 10, 23, 45, 0, time.UTC),
	time.Date(2025, 4, 5, 23, 59, 59, 990_000_000, time.UTC),
	time.Date(2025, 4, 6, 0, 0, 0, 0, time.UTC),
	time.Date(2025, 4, 4, 18, 7, 3, 250_000_000, time.UTC),
}

var prompts = []string{
	"你好，请介绍一下你自己",
	"用三句话解释什么是大语言模型",
	"写一首关于\"秋天\"的诗，\n要求押韵",
	"Translate to English: 今天天气很好 🌤️",
	`路径 C:\models\qwen 里有什么? <b>&amp;</b>`,
	"",
}

// EventTimestamp is the @timestamp of the g-th event, in Filebeat's format.
func EventTimestamp(g int) time.Time {
	return anchors[g%len(anchors)].Add(time.Duration(g) * time.Millisecond)
}

func makeEvent(prefix string, window, index, g int) Event {
	ts := EventTimestamp(g)
	status, level, length := "success", "INFO", 100+(g*37)%900
	if g%7 == 3 {
		status, level, length = "error", "ERROR", 0
	}
	line, _ := json.Marshal(inferenceLine{
		Timestamp:       ts.Format("2006-01-02T15:04:05Z"),
		Level:           level,
		RequestID:       fmt.Sprintf("req_%s_%d_%d", prefix, window, index),
		Prompt:          prompts[g%len(prompts)],
		ResponseLength:  length,
		InferenceTimeMS: 200 + (g*53)%2000,
		Status:          status,
	})
	var ev Event
	ev.Timestamp = ts.Format("2006-01-02T15:04:05.000Z")
	ev.Message = string(line)
	ev.Log.File.Path = "/var/log/qwen/infer.log"
	ev.Log.Offset = int64(g) * 256
	ev.Host.Name = "node-1"
	ev.Agent.Type = "filebeat"
	ev.ECS.Version = "8.0.0"
	ev.TestID = fmt.Sprintf("%s-%d-%d", prefix, window, index)
	return ev
}

// readEventsFile returns the non-empty lines of an NDJSON file, each checked to be
// one JSON value and kept byte for byte as a json.RawMessage (no trailing newline).
func readEventsFile(path string) ([]json.RawMessage, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var events []json.RawMessage
	for n, line := range bytes.Split(data, []byte{'\n'}) {
		if len(line) == 0 {
			continue // the newline that ends the last line, or a blank line
		}
		if !json.Valid(line) {
			return nil, fmt.Errorf("%s:%d: not one JSON value", path, n+1)
		}
		events = append(events, json.RawMessage(line))
	}
	return events, nil
}

// rawEncoder is the go-lumber JSON encoder: a json.RawMessage (an -events line) is
// sent exactly as read, while anything else goes through json.Marshal, go-lumber's
// default. json.Marshal alone would not do for raw lines: it re-compacts a
// RawMessage and escapes <, >, &, U+2028 and U+2029 in its strings.
func rawEncoder(v interface{}) ([]byte, error) {
	if raw, ok := v.(json.RawMessage); ok {
		return raw, nil
	}
	return json.Marshal(v)
}

// testIDOf returns the event's top-level string test_id, if it has one.
func testIDOf(line json.RawMessage) (string, bool) {
	var ev struct {
		TestID *string `json:"test_id"`
	}
	if json.Unmarshal(line, &ev) != nil || ev.TestID == nil {
		return "", false
	}
	return *ev.TestID, true
}
