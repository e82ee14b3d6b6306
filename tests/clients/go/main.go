// lumberclient drives Elastic's go-lumber v2 client (the library inside Filebeat's
// Logstash output) against a Lumberjack v2 server and reports, as one JSON line on
// stdout, how many events were sent and acknowledged.
//
// Every event has Filebeat's shape and a unique test_id "<prefix>-<window>-<index>",
// so a test can check the server's output event by event. The events are fully
// deterministic: the same flags produce the same events (see events.go).
//
// With -events FILE the events are instead the lines of an NDJSON file (for example
// tests/corpus/inputs.ndjson), sent byte for byte in windows of -window events; the
// last window may be shorter. -windows and -id are ignored then, and "ids" lists the
// string test_id of each line that has one.
//
// With -mode failover -addr A -addr2 B the client behaves like Filebeat's Logstash
// output with two hosts and loadbalance: false: when the connection to one host fails
// it switches to the other and resends every event not yet acknowledged (see
// failover.go). Its report adds hosts, acked_by, failovers, connect_failures, resent,
// resent_ids and failover_errors; events_sent then counts resends too.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	v2 "github.com/elastic/go-lumber/client/v2"
)

type result struct {
	Client      string   `json:"client"`
	Version     string   `json:"version"`
	Mode        string   `json:"mode"`
	Compress    int      `json:"compress"`
	Window      int      `json:"window"`
	Windows     int      `json:"windows"`
	Inflight    int      `json:"inflight,omitempty"`
	EventsSent  int      `json:"events_sent"`
	EventsAcked int      `json:"events_acked"`
	ElapsedMS   int64    `json:"elapsed_ms"`
	Error       string   `json:"error,omitempty"`
	EventsFile  string   `json:"events_file,omitempty"`
	TLSVersion  string   `json:"tls_version,omitempty"`
	TLSCipher   string   `json:"tls_cipher,omitempty"`
	IDs         []string `json:"ids"`
	// Only in -mode failover; nil (and absent from the JSON) otherwise.
	*failoverReport
}

// goLumberVersion is the module version pinned in go.mod (the one Filebeat pins).
const goLumberVersion = "v0.1.2-0.20220819171948-335fde24ea0f"

func main() {
	addr := flag.String("addr", "127.0.0.1:5044", "server host:port")
	mode := flag.String("mode", "sync", "sync (one window at a time), async (pipelined windows), "+
		"or failover (Filebeat with hosts [-addr, -addr2], loadbalance: false)")
	addr2 := flag.String("addr2", "", "failover only, required: the second server host:port")
	compress := flag.Int("compress", 3, "zlib compression level 0..9 (0 = plain J frames)")
	window := flag.Int("window", 10, "events per window (N)")
	windows := flag.Int("windows", 2, "number of windows (K)")
	inflight := flag.Int("inflight", 2, "async and failover: windows queued for ACK, like Filebeat's pipelining "+
		"(failover: 0 = SyncClient, one window at a time)")
	prefix := flag.String("id", "go", "test_id prefix")
	timeout := flag.Duration("timeout", 30*time.Second, "go-lumber timeout (dial, each write, each ACK read)")
	deadline := flag.Duration("deadline", 0, "failover only: give up unless every event is acknowledged "+
		"within this long (default 3 x -timeout)")
	backoff := flag.Duration("backoff", 100*time.Millisecond, "failover only: wait before reconnecting, "+
		"doubled after each failure without progress up to 10 x")
	pace := flag.Duration("pace", 0, "failover only: start sending a window at most this often, so that a "+
		"load lasts at least -windows x -pace however fast the machine is")
	progressFile := flag.String("progress", "", "failover only: append \"acked <total>\" to this file "+
		"whenever a window (or part of one) is acknowledged")
	dump := flag.String("dump", "", "write every event sent, one JSON line each, to this file")
	record := flag.String("record", "", "also tee every byte written to the server into this file")
	eventsFile := flag.String("events", "", "send the lines of this NDJSON file as the events, byte for byte, "+
		"in windows of -window events (-windows and -id are then ignored)")
	tlsCA := flag.String("tls-ca", "", "TLS: verify the server against these CA certificates (PEM), as Filebeat's ssl.certificate_authorities with verification_mode: full")
	tlsCert := flag.String("tls-cert", "", "TLS: client certificate (PEM), as Filebeat's ssl.certificate")
	tlsKey := flag.String("tls-key", "", "TLS: client key (PEM), as Filebeat's ssl.key")
	tlsName := flag.String("tls-server-name", "", "TLS: name the server certificate must carry (default: the host of -addr)")
	tlsMin := flag.String("tls-min", "1.2", "TLS: lowest version offered (1.2 or 1.3)")
	tlsMax := flag.String("tls-max", "1.3", "TLS: highest version offered (1.2 or 1.3)")
	flag.Parse()

	if *window < 1 || *windows < 1 {
		fail("window and windows must be >= 1")
	}
	switch *mode {
	case "sync", "async":
	case "failover":
		if *addr2 == "" {
			fail("-mode failover needs -addr2")
		}
		if *inflight < 0 {
			fail("inflight must be >= 0")
		}
	default:
		fail("mode must be sync, async or failover")
	}

	var batches [][]interface{}
	ids := []string{}
	var eventIDs []string // per event, "" when it has no test_id (failover's resent_ids)
	var dumpLines [][]byte
	if *eventsFile != "" {
		lines, err := readEventsFile(*eventsFile)
		if err != nil {
			fail("events: %v", err)
		}
		if len(lines) == 0 {
			fail("events: %s has no events", *eventsFile)
		}
		for start := 0; start < len(lines); start += *window {
			end := start + *window
			if end > len(lines) {
				end = len(lines)
			}
			batch := make([]interface{}, 0, end-start)
			for _, line := range lines[start:end] {
				batch = append(batch, line) // a json.RawMessage: rawEncoder sends it as is
				id, ok := testIDOf(line)
				if ok {
					ids = append(ids, id)
				}
				eventIDs = append(eventIDs, id)
				if *dump != "" {
					dumpLines = append(dumpLines, line)
				}
			}
			batches = append(batches, batch)
		}
	} else {
		batches = make([][]interface{}, *windows)
		for w := 0; w < *windows; w++ {
			batch := make([]interface{}, *window)
			for i := 0; i < *window; i++ {
				ev := makeEvent(*prefix, w, i, w*(*window)+i)
				batch[i] = ev
				ids = append(ids, ev.TestID)
				eventIDs = append(eventIDs, ev.TestID)
				if *dump != "" {
					b, err := json.Marshal(ev) // the same encoder go-lumber uses by default
					if err != nil {
						fail("encode: %v", err)
					}
					dumpLines = append(dumpLines, b)
				}
			}
			batches[w] = batch
		}
	}
	if *dump != "" {
		f, err := os.Create(*dump)
		if err != nil {
			fail("dump: %v", err)
		}
		for _, l := range dumpLines {
			f.Write(l)
			f.Write([]byte{'\n'})
		}
		if err := f.Close(); err != nil {
			fail("dump: %v", err)
		}
	}

	res := result{
		Client: "go-lumber", Version: goLumberVersion, Mode: *mode, Compress: *compress,
		Window: *window, Windows: len(batches), EventsFile: *eventsFile, IDs: ids,
	}
	if *mode == "async" || *mode == "failover" {
		res.Inflight = *inflight
	}

	dial := (&net.Dialer{Timeout: *timeout}).Dial
	var rec *os.File
	if *record != "" {
		var err error
		rec, err = os.Create(*record)
		if err != nil {
			fail("record: %v", err)
		}
		defer rec.Close()
		plain := dial
		dial = func(network, address string) (net.Conn, error) {
			c, err := plain(network, address)
			if err != nil {
				return nil, err
			}
			return &teeConn{Conn: c, w: rec}, nil
		}
	}
	var tlsState *tls.ConnectionState
	if *tlsCA != "" {
		cfg, err := tlsConfig(*addr, *tlsCA, *tlsCert, *tlsKey, *tlsName, *tlsMin, *tlsMax)
		if err != nil {
			fail("tls: %v", err)
		}
		named := func(address string) (*tls.Config, error) {
			if *tlsName != "" || address == *addr {
				return cfg, nil
			}
			// another host (-addr2): verify the name of the host dialled
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return nil, err
			}
			c := cfg.Clone()
			c.ServerName = host
			return c, nil
		}
		tcp := dial
		// Filebeat's transport: TCP, then crypto/tls with full verification, handshake
		// before the first window.
		dial = func(network, address string) (net.Conn, error) {
			cfg, err := named(address)
			if err != nil {
				return nil, err
			}
			c, err := tcp(network, address)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(c, cfg)
			tc.SetDeadline(time.Now().Add(*timeout))
			if err := tc.Handshake(); err != nil {
				c.Close()
				return nil, fmt.Errorf("tls handshake: %w", err)
			}
			tc.SetDeadline(time.Time{})
			st := tc.ConnectionState()
			tlsState = &st
			return tc, nil
		}
	}
	opts := []v2.Option{v2.Timeout(*timeout), v2.CompressionLevel(*compress), v2.JSONEncoder(rawEncoder)}

	start := time.Now()
	var err error
	switch *mode {
	case "sync":
		err = runSync(dial, *addr, opts, batches, &res)
	case "async":
		err = runAsync(dial, *addr, *inflight, opts, batches, &res)
	case "failover":
		f := newFailover(batches, eventIDs)
		f.hosts = [2]string{*addr, *addr2}
		f.dial, f.opts, f.inflight, f.backoff, f.pace = dial, opts, *inflight, *backoff, *pace
		if *deadline <= 0 {
			*deadline = 3 * *timeout
		}
		f.deadline = start.Add(*deadline)
		if *progressFile != "" {
			p, perr := os.OpenFile(*progressFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
			if perr != nil {
				fail("progress: %v", perr)
			}
			defer p.Close()
			f.progress = p
		}
		err = f.run()
		res.EventsSent, res.EventsAcked = f.eventsSent(), f.nAcked
		res.failoverReport = &f.report
	}
	res.ElapsedMS = time.Since(start).Milliseconds()
	if tlsState != nil {
		res.TLSVersion = tls.VersionName(tlsState.Version)
		res.TLSCipher = tls.CipherSuiteName(tlsState.CipherSuite)
	}
	if err != nil {
		res.Error = err.Error()
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	if err != nil {
		fail("%v", err)
	}
	// failover: run returned an error unless every distinct event was acknowledged
	if *mode != "failover" && res.EventsAcked != res.EventsSent {
		fail("only %d of %d events acknowledged", res.EventsAcked, res.EventsSent)
	}
}

// runSync sends one window at a time: SyncClient.Send writes the window and blocks in
// AwaitACK until the server acknowledged all N events of it.
func runSync(dial func(string, string) (net.Conn, error), addr string, opts []v2.Option,
	batches [][]interface{}, res *result) error {
	cl, err := v2.SyncDialWith(dial, addr, opts...)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer cl.Close()
	for w, batch := range batches {
		res.EventsSent += len(batch)
		n, err := cl.Send(batch)
		res.EventsAcked += n
		if err != nil {
			return fmt.Errorf("window %d: %d of %d acked: %w", w, n, len(batch), err)
		}
		if n != len(batch) {
			return fmt.Errorf("window %d: %d of %d acked", w, n, len(batch))
		}
	}
	return nil
}

// runAsync pipelines windows like Filebeat's Logstash output with pipelining > 0:
// AsyncClient.Send writes a window and returns at once; an ACK goroutine waits for
// the windows' ACKs in order and calls back with the acknowledged count.
func runAsync(dial func(string, string) (net.Conn, error), addr string, inflight int,
	opts []v2.Option, batches [][]interface{}, res *result) error {
	cl, err := v2.AsyncDialWith(dial, addr, inflight, opts...)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	for w, batch := range batches {
		w, size := w, len(batch)
		wg.Add(1)
		mu.Lock()
		res.EventsSent += size
		mu.Unlock()
		err := cl.Send(func(seq uint32, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			res.EventsAcked += int(seq)
			if err == nil && int(seq) != size {
				err = fmt.Errorf("acked %d of %d", seq, size)
			}
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("window %d: %w", w, err)
			}
		}, batch)
		if err != nil {
			// the callback was (or will be) called with the error as well
			break
		}
	}
	wg.Wait()
	cl.Close()
	if firstErr == nil && res.EventsAcked != res.EventsSent {
		firstErr = errors.New("not every window was acknowledged")
	}
	return firstErr
}

// tlsConfig is what Filebeat builds from output.logstash.ssl.*: the CA pool, an optional
// client certificate, the server name to verify, and the protocol range.
func tlsConfig(addr, ca, cert, key, name, min, max string) (*tls.Config, error) {
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", ca)
	}
	if name == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		name = host
	}
	version := func(v string) (uint16, error) {
		switch v {
		case "1.2", "TLSv1.2":
			return tls.VersionTLS12, nil
		case "1.3", "TLSv1.3":
			return tls.VersionTLS13, nil
		}
		return 0, fmt.Errorf("unknown TLS version %q", v)
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: name}
	if cfg.MinVersion, err = version(min); err != nil {
		return nil, err
	}
	if cfg.MaxVersion, err = version(max); err != nil {
		return nil, err
	}
	if cert != "" || key != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// teeConn copies every byte written to the server into w.
type teeConn struct {
	net.Conn
	w  *os.File
	mu sync.Mutex
}

func (c *teeConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.mu.Lock()
		c.w.Write(b[:n])
		c.mu.Unlock()
	}
	return n, err
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "lumberclient: "+format+"\n", args...)
	os.Exit(1)
}
