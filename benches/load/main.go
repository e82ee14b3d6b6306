// Command lumberload is a Lumberjack v2 (Beats protocol) load generator for
// lumberd benchmarks. It speaks through Elastic's go-lumber client v2, the
// library inside Filebeat's logstash output.
//
// To keep the generator's own CPU out of the measurement, every window is
// encoded before the clock starts: go-lumber's own Client.Send encodes a pool
// of windows (W frame + one zlib C frame holding N J frames, exactly the bytes
// Filebeat puts on the wire) into memory, and the timed run only writes those
// bytes and reads ACKs with go-lumber's Client.AwaitACK. With -live the run
// uses go-lumber's AsyncClient instead, which JSON-encodes (pass-through here)
// and compresses every window while the clock runs, as Filebeat does.
//
// Output: one JSON line on stdout. Exit status 1 when not every event was
// acknowledged within -timeout (or on any connection error).
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	v2 "github.com/elastic/go-lumber/client/v2"
)

type config struct {
	addr       string
	conns      int
	events     int
	window     int
	compress   int
	pipelining int
	timeout    time.Duration
	hold       bool
	live       bool
	pool       int
	seed       int64
	tlsCA      string
	tlsName    string
	dialPar    int
	handshakes bool
	dump       string
	rate       float64
	tlsConfig  *tls.Config
	// t0 is when the timed run starts: -rate paces every connection from it.
	t0 time.Time
}

type result struct {
	EventsSent       int64   `json:"events_sent"`
	EventsAcked      int64   `json:"events_acked"`
	Seconds          float64 `json:"seconds"`
	EventsPerSec     float64 `json:"events_per_sec"`
	Conns            int     `json:"conns"`
	Window           int     `json:"window"`
	Compress         int     `json:"compress"`
	Pipelining       int     `json:"pipelining"`
	MaxUnacked       int     `json:"max_unacked_windows"`
	Mode             string  `json:"mode"`
	WireBytes        int64   `json:"wire_bytes"`
	AvgEventBytes    float64 `json:"avg_event_bytes"`
	ClientCPUSeconds float64 `json:"client_cpu_seconds"`
	TLS              bool    `json:"tls"`
	TLSVersion       string  `json:"tls_version,omitempty"`
	DialSeconds      float64 `json:"dial_seconds"`
	DialConcurrency  int     `json:"dial_concurrency"`
	ConnectsPerSec   float64 `json:"connects_per_sec"`
	Rate             float64 `json:"rate,omitempty"`
	Error            string  `json:"error,omitempty"`
}

func main() {
	var c config
	flag.StringVar(&c.addr, "addr", "127.0.0.1:5044", "lumberjack server address")
	flag.IntVar(&c.conns, "conns", 4, "number of connections")
	flag.IntVar(&c.events, "events", 2000000, "total events, split across connections (ignored with -hold)")
	flag.IntVar(&c.window, "window", 2048, "events per window (Filebeat bulk_max_size)")
	flag.IntVar(&c.compress, "compress", 3, "zlib level 0-9 (0 = plain J frames)")
	flag.IntVar(&c.pipelining, "pipelining", 2, "Filebeat's pipelining setting: 0 = sync client (1 window unacked), P > 0 = async client, up to P+1 windows unacked per connection as in Filebeat")
	flag.DurationVar(&c.timeout, "timeout", 60*time.Second, "whole-run deadline, also go-lumber's per-write/per-ACK timeout")
	flag.BoolVar(&c.hold, "hold", false, "memory test: each connection sends exactly one window and waits for its ACK")
	flag.BoolVar(&c.live, "live", false, "encode+compress windows during the run with go-lumber's AsyncClient (Filebeat-like CPU on the client)")
	flag.IntVar(&c.pool, "pool", 32, "number of distinct prebuilt windows reused round-robin")
	flag.Int64Var(&c.seed, "seed", 1, "random seed for event contents")
	flag.StringVar(&c.tlsCA, "tls-ca", "", "connect over TLS (crypto/tls, Filebeat's stack), verifying the server against these CA certificates (PEM)")
	flag.StringVar(&c.tlsName, "tls-server-name", "", "name the server certificate must carry (default: the host of -addr)")
	flag.IntVar(&c.dialPar, "dial-concurrency", 64, "connections dialled (and TLS-handshaken) at once")
	flag.BoolVar(&c.handshakes, "connect-only", false, "only dial (and handshake) every connection, report connects per second, close; no events")
	flag.Float64Var(&c.rate, "rate", 0, "events per second across all connections, each connection sending its windows on schedule (0 = as fast as ACKs allow): a steady load below what the server and its output absorb")
	flag.StringVar(&c.dump, "dump", "", "write the prebuilt windows' wire bytes (the -pool windows, one after another) to this file and exit: byte-identical input for in-process benchmarks")
	flag.Parse()

	if err := validate(&c); err != nil {
		fmt.Fprintln(os.Stderr, "lumberload:", err)
		os.Exit(2)
	}
	if c.dump != "" {
		if err := dump(&c); err != nil {
			fmt.Fprintln(os.Stderr, "lumberload:", err)
			os.Exit(1)
		}
		return
	}
	raiseNofile()

	res := run(&c)
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	if res.Error != "" {
		fmt.Fprintln(os.Stderr, "lumberload:", res.Error)
	}
	if res.Error != "" || res.EventsAcked != res.EventsSent || (res.EventsSent == 0 && !c.handshakes) {
		os.Exit(1)
	}
}

func validate(c *config) error {
	switch {
	case c.conns < 1:
		return errors.New("-conns must be >= 1")
	case c.window < 1:
		return errors.New("-window must be >= 1")
	case c.compress < 0 || c.compress > 9:
		return errors.New("-compress must be 0..9")
	case c.pipelining < 0:
		return errors.New("-pipelining must be >= 0")
	case c.timeout <= 0:
		return errors.New("-timeout must be > 0")
	case c.pool < 1:
		return errors.New("-pool must be >= 1")
	case c.dialPar < 1:
		return errors.New("-dial-concurrency must be >= 1")
	case !c.hold && c.events < 1:
		return errors.New("-events must be >= 1")
	case c.rate < 0:
		return errors.New("-rate must be >= 0")
	case c.rate > 0 && (c.hold || c.handshakes):
		return errors.New("-rate paces a run of events: not with -hold or -connect-only")
	}
	if c.hold {
		c.events = c.conns * c.window
	}
	if c.handshakes {
		c.events = c.conns
		c.window = 1
		c.pool = 1
	}
	if c.tlsCA != "" {
		pem, err := os.ReadFile(c.tlsCA)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: no PEM certificate", c.tlsCA)
		}
		name := c.tlsName
		if name == "" {
			if name, _, err = net.SplitHostPort(c.addr); err != nil {
				return err
			}
		}
		// Filebeat's defaults: full verification, TLS 1.2 and 1.3. No session cache:
		// each Filebeat is its own process, so a reconnecting fleet does full handshakes.
		c.tlsConfig = &tls.Config{RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS12}
	}
	return nil
}

// raiseNofile lifts the soft RLIMIT_NOFILE to the hard limit (Go >= 1.19 does
// this by itself at start-up; kept explicit for -hold with many connections).
func raiseNofile() {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// ---------------------------------------------------------------------------
// Events

var prompts = []string{
	"请用三句话总结这篇关于大语言模型推理优化的文章，并给出 key takeaways for the engineering team.",
	"Translate the following paragraph into Chinese: The quick brown fox jumps over the lazy dog while the scheduler rebalances GPU memory.",
	"写一首关于秋天和机器学习的七言绝句, then explain the metaphor in English for a non-native reader.",
	"Explain the difference between KV cache quantization and weight-only quantization, 用中文回答，并附上一个简单的例子。",
	"帮我写一个 Python 函数，读取日志文件并统计每分钟的请求数量, handle timezone offsets and malformed lines gracefully.",
	"What are the trade-offs of speculative decoding on a 7B model? 请列出优缺点并估算延迟收益。",
	"根据以下用户反馈生成一份产品改进建议清单：响应速度慢、答案不够准确、偶尔出现乱码。Keep it under 200 words.",
	"Summarize this customer support ticket and classify its urgency: 我的订单已经三天没有发货了，请尽快处理，谢谢！",
	"设计一个高可用的日志收集架构，包含 Filebeat、Logstash 替代方案和 Elasticsearch，说明每个组件的作用。",
	"Write a SQL query that returns the top 10 prompts by average inference_time_ms per day, 并解释索引应该怎么建。",
	"请比较 Qwen 与其他开源模型在中文阅读理解任务上的表现, include a short table with benchmark names and scores.",
	"Generate five unit test cases for a rate limiter that allows 100 requests per second per tenant, 用 Go 语言实现。",
}

var levels = []string{"INFO", "INFO", "INFO", "INFO", "INFO", "INFO", "WARN", "DEBUG"}
var statuses = []string{"success", "success", "success", "success", "success", "success", "success", "timeout"}

type eventGen struct {
	rnd    *rand.Rand
	seq    int64
	offset int64
	base   time.Time
	agent  string
}

func newEventGen(seed int64) *eventGen {
	r := rand.New(rand.NewSource(seed))
	agent := fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", r.Uint32(), r.Intn(1<<16), r.Intn(1<<16), r.Intn(1<<16), r.Int63n(1<<48))
	return &eventGen{
		rnd:   r,
		base:  time.Date(2025, 4, 5, 10, 23, 45, 123000000, time.UTC),
		agent: agent,
	}
}

func jsonString(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}

// next returns one Filebeat-shaped event (~950 bytes of JSON).
func (g *eventGen) next() json.RawMessage {
	g.seq++
	ts := g.base.Add(time.Duration(g.seq) * 7 * time.Millisecond)
	tsStr := ts.Format("2006-01-02T15:04:05.000Z")
	// two prompt fragments: ~230 bytes of mixed Chinese/English text
	prompt := prompts[g.rnd.Intn(len(prompts))] + " " + prompts[g.rnd.Intn(len(prompts))]
	// the inference-log line as the application writes it
	var line bytes.Buffer
	line.WriteString(`{"timestamp":"`)
	line.WriteString(ts.Add(-3 * time.Millisecond).Format("2006-01-02T15:04:05.000Z"))
	line.WriteString(`","level":"`)
	line.WriteString(levels[g.rnd.Intn(len(levels))])
	line.WriteString(`","service":"qwen-inference","model":"qwen2.5-7b-instruct","request_id":"req_`)
	line.WriteString(strconv.FormatInt(ts.UnixMilli(), 36))
	line.WriteString(fmt.Sprintf("%08x", g.rnd.Uint32()))
	line.WriteString(`","trace_id":"`)
	line.WriteString(fmt.Sprintf("%016x%016x", g.rnd.Uint64(), g.rnd.Uint64()))
	line.WriteString(`","user_id":"u_`)
	line.WriteString(strconv.Itoa(10000 + g.rnd.Intn(90000)))
	line.WriteString(`","prompt":`)
	line.Write(jsonString(prompt))
	line.WriteString(`,"prompt_tokens":`)
	line.WriteString(strconv.Itoa(20 + g.rnd.Intn(200)))
	line.WriteString(`,"response_length":`)
	line.WriteString(strconv.Itoa(50 + g.rnd.Intn(900)))
	line.WriteString(`,"inference_time_ms":`)
	line.WriteString(strconv.Itoa(80 + g.rnd.Intn(3000)))
	line.WriteString(`,"status":"`)
	line.WriteString(statuses[g.rnd.Intn(len(statuses))])
	line.WriteString(`"}`)
	lineBytes := line.Len()

	var ev bytes.Buffer
	ev.Grow(1100)
	ev.WriteString(`{"@timestamp":"`)
	ev.WriteString(tsStr)
	ev.WriteString(`","message":`)
	ev.Write(jsonString(line.String()))
	ev.WriteString(`,"log":{"file":{"path":"/var/log/qwen/infer.log"},"offset":`)
	ev.WriteString(strconv.FormatInt(g.offset, 10))
	ev.WriteString(`},"input":{"type":"filestream"},"host":{"name":"node-1"},"agent":{"id":"`)
	ev.WriteString(g.agent)
	ev.WriteString(`","name":"node-1","type":"filebeat","ephemeral_id":"`)
	ev.WriteString(g.agent[:24])
	ev.WriteString(`0000cafe0001","version":"8.11.3"},"ecs":{"version":"8.0.0"}}`)
	g.offset += int64(lineBytes) + 1
	return json.RawMessage(ev.Bytes())
}

// ---------------------------------------------------------------------------
// Prebuilt windows

// captureConn is a net.Conn that records what go-lumber writes.
type captureConn struct {
	net.Conn // nil: only Write and the deadline setters are used
	buf      bytes.Buffer
}

func (c *captureConn) Write(p []byte) (int, error)      { return c.buf.Write(p) }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) Close() error                     { return nil }

// passthrough is a go-lumber JSONEncoder for events that are already JSON.
func passthrough(v interface{}) ([]byte, error) {
	switch x := v.(type) {
	case json.RawMessage:
		return x, nil
	case []byte:
		return x, nil
	}
	return json.Marshal(v)
}

type window struct {
	n      int           // events
	events []interface{} // json.RawMessage each (kept for -live)
	wire   []byte        // exact bytes go-lumber writes for this window
	raw    int64         // JSON bytes of the events
}

func buildWindow(g *eventGen, n, compress int, keepEvents bool) (*window, error) {
	evs := make([]interface{}, n)
	var raw int64
	for i := range evs {
		e := g.next()
		raw += int64(len(e))
		evs[i] = e
	}
	cc := &captureConn{}
	cl, err := v2.NewWithConn(cc, v2.CompressionLevel(compress), v2.JSONEncoder(passthrough))
	if err != nil {
		return nil, err
	}
	if err := cl.Send(evs); err != nil {
		return nil, err
	}
	w := &window{n: n, wire: append([]byte(nil), cc.buf.Bytes()...), raw: raw}
	if keepEvents {
		w.events = evs
	}
	return w, nil
}

// dump writes -pool prebuilt windows of -window events, as go-lumber encodes them,
// to c.dump: the frames a run sends, for benchmarks that decode them in-process.
func dump(c *config) error {
	g := newEventGen(c.seed)
	var out bytes.Buffer
	for i := 0; i < c.pool; i++ {
		w, err := buildWindow(g, c.window, c.compress, false)
		if err != nil {
			return err
		}
		out.Write(w.wire)
	}
	return os.WriteFile(c.dump, out.Bytes(), 0o644)
}

// plan is the list of windows one connection sends.
type plan []*window

func buildPlans(c *config) ([]plan, error) {
	g := newEventGen(c.seed)
	per := c.events / c.conns
	extra := c.events % c.conns
	poolSize := c.pool
	maxWindows := (per + 1 + c.window - 1) / c.window * c.conns
	if poolSize > maxWindows {
		poolSize = maxWindows
	}
	if poolSize < 1 {
		poolSize = 1
	}
	pool := make([]*window, 0, poolSize)
	for i := 0; i < poolSize; i++ {
		w, err := buildWindow(g, c.window, c.compress, c.live)
		if err != nil {
			return nil, err
		}
		pool = append(pool, w)
	}
	tails := map[int]*window{}
	plans := make([]plan, c.conns)
	next := 0
	for i := 0; i < c.conns; i++ {
		n := per
		if i < extra {
			n++
		}
		var p plan
		for n >= c.window {
			p = append(p, pool[next%len(pool)])
			next++
			n -= c.window
		}
		if n > 0 {
			t, ok := tails[n]
			if !ok {
				var err error
				if t, err = buildWindow(g, n, c.compress, c.live); err != nil {
					return nil, err
				}
				tails[n] = t
			}
			p = append(p, t)
		}
		plans[i] = p
	}
	return plans, nil
}

// ---------------------------------------------------------------------------
// Run

type counters struct {
	sent  atomic.Int64
	acked atomic.Int64
	wire  atomic.Int64

	mu       sync.Mutex
	firstErr error
}

func (k *counters) fail(err error) {
	k.mu.Lock()
	if k.firstErr == nil {
		k.firstErr = err
	}
	k.mu.Unlock()
}

func run(c *config) result {
	res := result{Conns: c.conns, Window: c.window, Compress: c.compress, Pipelining: c.pipelining, Mode: "prebuilt",
		TLS: c.tlsConfig != nil, DialConcurrency: c.dialPar, Rate: c.rate}
	if c.live {
		res.Mode = "live"
	}
	if c.hold {
		res.Mode = "hold"
		c.live = false
		c.pipelining = 0
		res.Pipelining = 0
	}
	res.MaxUnacked = c.pipelining + 1

	plans, err := buildPlans(c)
	if err != nil {
		res.Error = "building windows: " + err.Error()
		return res
	}
	var totalEvents, rawBytes int64
	for _, p := range plans {
		for _, w := range p {
			totalEvents += int64(w.n)
			rawBytes += w.raw
		}
	}
	if totalEvents > 0 {
		res.AvgEventBytes = float64(rawBytes) / float64(totalEvents)
	}

	// The deadline covers dialing and the run, not building the windows.
	deadline := time.Now().Add(c.timeout)

	// Connect everything (TCP, and the TLS handshake with -tls-ca) before the clock starts.
	conns := make([]net.Conn, c.conns)
	dialStart := time.Now()
	{
		var wg sync.WaitGroup
		var mu sync.Mutex
		var dialErr error
		sem := make(chan struct{}, c.dialPar)
		for i := range conns {
			wg.Add(1)
			sem <- struct{}{}
			go func(i int) {
				defer wg.Done()
				defer func() { <-sem }()
				d := net.Dialer{Timeout: time.Until(deadline)}
				cn, err := d.Dial("tcp", c.addr)
				if err == nil && c.tlsConfig != nil {
					tc := tls.Client(cn, c.tlsConfig)
					tc.SetDeadline(deadline)
					if err = tc.Handshake(); err != nil {
						cn.Close()
						err = fmt.Errorf("tls handshake: %w", err)
					} else {
						tc.SetDeadline(time.Time{})
						if i == 0 {
							mu.Lock()
							res.TLSVersion = tls.VersionName(tc.ConnectionState().Version)
							mu.Unlock()
						}
						cn = tc
					}
				}
				if err != nil {
					mu.Lock()
					if dialErr == nil {
						dialErr = err
					}
					mu.Unlock()
					return
				}
				conns[i] = cn
			}(i)
		}
		wg.Wait()
		if dialErr != nil {
			for _, cn := range conns {
				if cn != nil {
					cn.Close()
				}
			}
			res.Error = "dial: " + dialErr.Error()
			return res
		}
	}
	res.DialSeconds = time.Since(dialStart).Seconds()
	if res.DialSeconds > 0 {
		res.ConnectsPerSec = float64(c.conns) / res.DialSeconds
	}
	if c.handshakes {
		for _, cn := range conns {
			cn.Close()
		}
		res.Mode = "connect-only"
		return res
	}

	k := &counters{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	cpu0 := cpuSeconds()
	t0 := time.Now()
	c.t0 = t0
	for i := range conns {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			var err error
			if c.live {
				err = runLive(c, conns[i], plans[i], k)
			} else {
				err = runPrebuilt(c, conns[i], plans[i], k)
			}
			if err != nil {
				k.fail(fmt.Errorf("conn %d: %w", i, err))
			}
		}(i)
	}
	close(start)

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	timedOut := false
	select {
	case <-done:
	case <-time.After(time.Until(deadline)):
		timedOut = true
		for _, cn := range conns {
			cn.Close() // unblocks every reader and writer
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
	elapsed := time.Since(t0).Seconds()
	res.ClientCPUSeconds = cpuSeconds() - cpu0
	for _, cn := range conns {
		cn.Close()
	}

	res.EventsSent = k.sent.Load()
	res.EventsAcked = k.acked.Load()
	res.WireBytes = k.wire.Load()
	res.Seconds = elapsed
	if elapsed > 0 {
		res.EventsPerSec = float64(res.EventsAcked) / elapsed
	}
	if timedOut {
		res.Error = fmt.Sprintf("timeout after %s: %d of %d events acked", c.timeout, res.EventsAcked, totalEvents)
	} else if k.firstErr != nil {
		res.Error = k.firstErr.Error()
	} else if res.EventsAcked != totalEvents {
		res.Error = fmt.Sprintf("%d of %d events acked", res.EventsAcked, totalEvents)
	}
	return res
}

// pace waits until window j (0-based) of one connection is due under -rate: each of
// the c.conns connections carries rate/conns events per second, its windows evenly
// spaced from the start of the run, so a slow ACK delays a window but does not make
// the following ones burst to catch up beyond the schedule.
func pace(c *config, j, window int) {
	if c.rate <= 0 {
		return
	}
	due := c.t0.Add(time.Duration(float64(j*window*c.conns) / c.rate * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		time.Sleep(d)
	}
}

// runPrebuilt writes prebuilt window bytes with at most c.pipelining+1 windows
// unacknowledged (what Filebeat's AsyncClient(queue = pipelining-1) puts on
// the wire; see README), and reads ACKs with go-lumber's Client.AwaitACK (which
// skips keep-alive ACK 0 and partial ACKs until the window's count arrives,
// and fails on an ACK above it).
func runPrebuilt(c *config, cn net.Conn, p plan, k *counters) error {
	cl, err := v2.NewWithConn(cn, v2.Timeout(c.timeout))
	if err != nil {
		return err
	}
	slots := make(chan struct{}, c.pipelining+1)
	pending := make(chan int, c.pipelining+1)
	ackErr := make(chan error, 1)
	abort := make(chan struct{})

	go func() {
		var err error
		for n := range pending {
			if err != nil {
				continue // drain
			}
			var seq uint32
			seq, err = cl.AwaitACK(uint32(n))
			// On "invalid sequence number" AwaitACK reports seq == n with an
			// error: count only real progress.
			if err == nil || seq < uint32(n) {
				k.acked.Add(int64(seq))
			}
			if err != nil {
				close(abort)
				cn.Close() // stop the writer too
				continue
			}
			<-slots
		}
		ackErr <- err
	}()

	var werr error
	for j, w := range p {
		pace(c, j, c.window)
		select {
		case slots <- struct{}{}:
		case <-abort:
		}
		select {
		case <-abort:
			werr = errors.New("aborted after ACK error")
		default:
		}
		if werr != nil {
			break
		}
		if werr = cn.SetWriteDeadline(time.Now().Add(c.timeout)); werr != nil {
			break
		}
		if _, werr = cn.Write(w.wire); werr != nil {
			break
		}
		k.sent.Add(int64(w.n))
		k.wire.Add(int64(len(w.wire)))
		pending <- w.n
	}
	close(pending)
	aerr := <-ackErr
	if aerr != nil {
		return fmt.Errorf("ack: %w", aerr)
	}
	if werr != nil {
		return fmt.Errorf("write: %w", werr)
	}
	return nil
}

// runLive drives go-lumber's clients exactly as Filebeat's logstash output
// does: SyncClient for pipelining 0, else AsyncClient with a queue of
// pipelining-1. JSON encoding (pass-through here) and zlib compression happen
// inside Send, during the run.
func runLive(c *config, cn net.Conn, p plan, k *counters) error {
	opts := []v2.Option{v2.Timeout(c.timeout), v2.CompressionLevel(c.compress), v2.JSONEncoder(passthrough)}
	if c.pipelining == 0 {
		cl, err := v2.NewSyncClientWithConn(cn, opts...)
		if err != nil {
			return err
		}
		defer cl.Close()
		for j, w := range p {
			pace(c, j, c.window)
			k.sent.Add(int64(w.n))
			k.wire.Add(int64(len(w.wire)))
			seq, err := cl.Send(w.events)
			k.acked.Add(int64(seq))
			if err != nil {
				return err
			}
		}
		return nil
	}
	cl, err := v2.NewAsyncClientWithConn(cn, c.pipelining-1, opts...)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var cbErr error
	var wg sync.WaitGroup
	for j, w := range p {
		pace(c, j, c.window)
		n := w.n
		wg.Add(1)
		err := cl.Send(func(seq uint32, err error) {
			defer wg.Done()
			k.acked.Add(int64(seq))
			if err != nil {
				mu.Lock()
				if cbErr == nil {
					cbErr = err
				}
				mu.Unlock()
			} else if int(seq) != n {
				mu.Lock()
				if cbErr == nil {
					cbErr = fmt.Errorf("window of %d acked up to %d", n, seq)
				}
				mu.Unlock()
			}
		}, w.events)
		if err != nil {
			break
		}
		k.sent.Add(int64(n))
		k.wire.Add(int64(len(w.wire))) // same bytes as the prebuilt encoding
	}
	wg.Wait()
	cl.Close()
	mu.Lock()
	defer mu.Unlock()
	return cbErr
}
