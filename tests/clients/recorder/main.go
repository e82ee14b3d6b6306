// recorder records one Lumberjack client connection for proto-fixtures/valid.
//
// It listens on -listen, prints "listening <addr>" on stdout, accepts ONE connection
// and proxies it to an in-process go-lumber server (github.com/elastic/go-lumber/server,
// v1 and v2 enabled, listening on another loopback port) that acknowledges every batch
// as soon as it has decoded it. Every byte the client sends is kept; when the client
// closes the connection the recorder writes:
//
//   - <out>.bin          the raw client->server byte stream
//   - <out>.expect.json  windows and events, from splitting the stream into frames
//
// and cross-checks the events three ways: its own frame split, what go-lumber's server
// decoded, and (with -dump) the events the client says it sent.
//
// With -ack last-seq the ACKs of go-lumber's server (which always carry the window's
// event count N) are rewritten to carry the sequence number of the window's last data
// frame, for clients that keep one running sequence across windows (pylogbeat).
// Keep-alive ACKs (0) pass through unchanged.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"sync"
	"time"

	"github.com/elastic/go-lumber/server"
)

type expectFile struct {
	Client   string            `json:"client"`
	Settings json.RawMessage   `json:"settings"`
	Bytes    int               `json:"bytes"`
	Windows  []Window          `json:"windows"`
	Events   []json.RawMessage `json:"events"`
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address the client connects to")
	out := flag.String("out", "", "output path without extension: writes <out>.bin and <out>.expect.json")
	client := flag.String("client", "", "client description for expect.json, e.g. \"go-lumber v0.1.2-... sync\"")
	settings := flag.String("settings", "{}", "client settings (a JSON object) for expect.json")
	dump := flag.String("dump", "", "JSON-lines file of the events the client sent, to cross-check")
	ackMode := flag.String("ack", "go-lumber", "go-lumber (pass go-lumber's ACKs through) or last-seq (rewrite them)")
	wait := flag.Duration("wait", 60*time.Second, "give up if no client connects and finishes within this time")
	flag.Parse()
	if *out == "" || *client == "" {
		fail("-out and -client are required")
	}
	if !json.Valid([]byte(*settings)) {
		fail("-settings is not JSON")
	}
	time.AfterFunc(*wait, func() { fail("timed out after %v", *wait) })

	// in-process go-lumber server
	innerL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("listen: %v", err)
	}
	inner := innerL.Addr().String()
	srv, err := server.NewWithListener(innerL, server.V1(true), server.V2(true))
	if err != nil {
		fail("go-lumber server: %v", err)
	}
	var mu sync.Mutex
	var decoded []interface{}
	go func() {
		for b := range srv.ReceiveChan() {
			mu.Lock()
			decoded = append(decoded, b.Events...)
			mu.Unlock()
			b.ACK()
		}
	}()

	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fail("listen: %v", err)
	}
	fmt.Printf("listening %s\n", l.Addr())
	os.Stdout.Sync()
	c, err := l.Accept()
	if err != nil {
		fail("accept: %v", err)
	}
	l.Close()
	up, err := net.Dial("tcp", inner)
	if err != nil {
		fail("dial go-lumber server: %v", err)
	}

	var recMu sync.Mutex
	var rec bytes.Buffer
	acks := make(chan struct{})
	// server -> client: ACKs, possibly rewritten
	go func() {
		defer close(acks)
		r := bufio.NewReader(up)
		var buf [6]byte
		nth := 0
		for {
			if _, err := io.ReadFull(r, buf[:]); err != nil {
				return
			}
			seq := binary.BigEndian.Uint32(buf[2:])
			if *ackMode == "last-seq" && seq != 0 {
				recMu.Lock()
				s, _ := ParseStream(rec.Bytes(), true)
				recMu.Unlock()
				if nth < len(s.Windows) {
					binary.BigEndian.PutUint32(buf[2:], s.Windows[nth].LastSeq)
				}
				nth++
			}
			if _, err := c.Write(buf[:]); err != nil {
				return
			}
		}
	}()
	// client -> server, teed
	chunk := make([]byte, 64*1024)
	for {
		n, rerr := c.Read(chunk)
		if n > 0 {
			recMu.Lock()
			rec.Write(chunk[:n])
			recMu.Unlock()
			if _, err := up.Write(chunk[:n]); err != nil {
				fail("write to go-lumber server: %v", err)
			}
		}
		if rerr != nil {
			break
		}
	}
	stream := rec.Bytes()
	s, perr := ParseStream(stream, false)
	if perr != nil {
		fail("recorded stream does not parse: %v", perr)
	}
	// let go-lumber's server finish decoding what it has read
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(decoded)
		mu.Unlock()
		if n >= len(s.Events) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	up.Close()
	c.Close()
	<-acks

	// cross-checks
	mu.Lock()
	got := decoded
	mu.Unlock()
	if len(got) != len(s.Events) {
		fail("go-lumber's server decoded %d events, the frame split found %d", len(got), len(s.Events))
	}
	for i, raw := range s.Events {
		if !sameJSON(raw, got[i]) {
			fail("event %d differs: frames %s, go-lumber %v", i, raw, got[i])
		}
	}
	if *dump != "" {
		lines, err := readLines(*dump)
		if err != nil {
			fail("dump: %v", err)
		}
		if len(lines) != len(s.Events) {
			fail("the client dumped %d events, the stream holds %d", len(lines), len(s.Events))
		}
		for i, l := range lines {
			var v interface{}
			if err := json.Unmarshal(l, &v); err != nil {
				fail("dump line %d: %v", i, err)
			}
			if !sameJSON(s.Events[i], v) {
				fail("event %d differs from the client's dump: stream %s, dump %s", i, s.Events[i], l)
			}
		}
	}

	if err := os.WriteFile(*out+".bin", stream, 0o644); err != nil {
		fail("%v", err)
	}
	js, err := expectJSON(expectFile{Client: *client, Settings: json.RawMessage(*settings),
		Bytes: len(stream), Windows: s.Windows, Events: s.Events})
	if err != nil {
		fail("%v", err)
	}
	if err := os.WriteFile(*out+".expect.json", js, 0o644); err != nil {
		fail("%v", err)
	}
	fmt.Fprintf(os.Stderr, "recorder: %s.bin: %d bytes, %d windows, %d events\n", *out, len(stream), len(s.Windows), len(s.Events))
	srv.Close()
}

// expectJSON writes the expect file readably but compactly: one window and one event
// per line.
func expectJSON(e expectFile) ([]byte, error) {
	var b bytes.Buffer
	put := func(key string, v interface{}, last bool) error {
		j, err := marshal(v)
		if err != nil {
			return err
		}
		kj, _ := json.Marshal(key)
		fmt.Fprintf(&b, "  %s: %s", kj, j)
		if !last {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
		return nil
	}
	list := func(key string, n int, item func(int) interface{}, last bool) error {
		kj, _ := json.Marshal(key)
		fmt.Fprintf(&b, "  %s: [\n", kj)
		for i := 0; i < n; i++ {
			j, err := marshal(item(i))
			if err != nil {
				return err
			}
			b.WriteString("    ")
			b.Write(j)
			if i < n-1 {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString("  ]")
		if !last {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
		return nil
	}
	b.WriteString("{\n")
	for _, err := range []error{
		put("client", e.Client, false),
		put("settings", e.Settings, false),
		put("bytes", e.Bytes, false),
		list("windows", len(e.Windows), func(i int) interface{} { return e.Windows[i] }, false),
		list("events", len(e.Events), func(i int) interface{} { return e.Events[i] }, true),
	} {
		if err != nil {
			return nil, err
		}
	}
	b.WriteString("}\n")
	if !json.Valid(b.Bytes()) {
		return nil, fmt.Errorf("expect file is not valid JSON")
	}
	return b.Bytes(), nil
}

// marshal is json.Marshal without HTML escaping, so that event payloads keep their
// characters as the client sent them (Go's own client escapes <>& itself).
func marshal(v interface{}) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

func sameJSON(raw json.RawMessage, decoded interface{}) bool {
	var a interface{}
	if err := json.Unmarshal(raw, &a); err != nil {
		return false
	}
	// go-lumber's v1 server yields map[string]string; normalise through JSON
	b, err := json.Marshal(decoded)
	if err != nil {
		return false
	}
	var d interface{}
	if err := json.Unmarshal(b, &d); err != nil {
		return false
	}
	return reflect.DeepEqual(a, d)
}

func readLines(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, l := range bytes.Split(b, []byte{'\n'}) {
		if len(bytes.TrimSpace(l)) > 0 {
			out = append(out, l)
		}
	}
	return out, nil
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "recorder: "+format+"\n", args...)
	os.Exit(1)
}
