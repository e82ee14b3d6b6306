// failover.go: -mode failover, Filebeat's Logstash output with two hosts and
// loadbalance: false, for tests that stop one server while a load is in flight.
//
// What it copies from Filebeat (libbeat/outputs/failover.go, outputs/backoff.go,
// outputs/logstash/sync.go and async.go):
//   - one connection at a time; every (re)connect goes to the other host, a failed
//     connect included (failoverClient.Connect: next = 1 - active for two hosts);
//   - on any error the connection is closed, the client waits a backoff and
//     reconnects (backoffClient.Publish/Connect, netClientWorker);
//   - of a failed window only the events go-lumber did not report as acknowledged
//     are sent again (syncClient.Publish: events = events[n:]; msgRef.callback:
//     r.slice = r.slice[n:]; then batch.RetryEvents with the rest).
//
// It does not copy the jittered 1 s..60 s backoff (tests want a short one), the random
// first host (it starts on -addr) or slow start (off by default in Filebeat).
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	v2 "github.com/elastic/go-lumber/client/v2"
)

// failoverReport holds the result fields only -mode failover reports. It is embedded
// in result as a pointer, so the other modes' JSON is unchanged.
type failoverReport struct {
	Hosts           []string       `json:"hosts"`
	AckedBy         map[string]int `json:"acked_by"`
	Failovers       int            `json:"failovers"`
	ConnectFailures int            `json:"connect_failures"`
	Resent          int            `json:"resent"`
	ResentIDs       []string       `json:"resent_ids"`
	FailoverErrors  []string       `json:"failover_errors"`
}

// maxReportedErrors caps failover_errors: a dead host retried until the deadline
// would otherwise fill the report with the same refused connect.
const maxReportedErrors = 20

// failover is the state of one run. Every event is an index into events; a window
// to send is a slice of such indexes, so a resent window carries exactly the events
// that are still unacknowledged, in their original order.
type failover struct {
	hosts    [2]string
	dial     func(network, address string) (net.Conn, error)
	opts     []v2.Option
	inflight int // 0: SyncClient; otherwise AsyncClient's queue of windows awaiting ACK
	backoff  time.Duration
	pace     time.Duration // the least time between the starts of two window sends
	lastSend time.Time
	deadline time.Time
	progress *os.File

	events  []interface{}
	ids     []string // test_id per event ("" when an -events line has none)
	pending [][]int  // windows still to send, in order

	// mu guards what the AsyncClient's ACK goroutine touches through the callbacks.
	mu      sync.Mutex
	sends   []int // per event: how often it was handed to go-lumber
	acked   []bool
	nAcked  int
	ackedBy map[string]int
	report  failoverReport
}

// newFailover flattens the windows into one event list; pending starts as those
// windows. eventIDs[i] is the test_id of the i-th event, or "" if it has none.
func newFailover(batches [][]interface{}, eventIDs []string) *failover {
	f := &failover{ackedBy: map[string]int{}}
	for _, batch := range batches {
		win := make([]int, len(batch))
		for i, ev := range batch {
			win[i] = len(f.events)
			f.events = append(f.events, ev)
		}
		f.pending = append(f.pending, win)
	}
	f.ids = eventIDs
	f.sends = make([]int, len(f.events))
	f.acked = make([]bool, len(f.events))
	return f
}

// run sends until every event is acknowledged or the deadline passes.
func (f *failover) run() error {
	host := 0
	wait := time.Duration(0)
	for len(f.pending) > 0 {
		if wait > 0 {
			if time.Now().Add(wait).After(f.deadline) {
				break
			}
			time.Sleep(wait)
		}
		if !time.Now().Before(f.deadline) {
			break
		}
		addr := f.hosts[host]
		// Filebeat's failoverClient moves to the other host on every Connect, so the
		// next attempt goes there whatever happens on this one.
		host = 1 - host
		conn, err := f.dial("tcp", addr)
		if err != nil {
			f.report.ConnectFailures++
			f.noteError(fmt.Errorf("connect %s: %w", addr, err))
			wait = f.nextBackoff(wait)
			continue
		}
		// A session must not outlive the deadline: closing the socket ends any write
		// or ACK wait in go-lumber with an error.
		cut := time.AfterFunc(time.Until(f.deadline), func() { conn.Close() })
		before := f.ackedCount()
		if f.inflight > 0 {
			err = f.asyncSession(conn, addr)
		} else {
			err = f.syncSession(conn, addr)
		}
		cut.Stop()
		if err == nil {
			continue // pending is empty
		}
		f.report.Failovers++
		f.noteError(err)
		if f.ackedCount() > before {
			wait = f.backoff // progress was made: start the backoff over
		} else {
			wait = f.nextBackoff(wait)
		}
	}
	f.finishReport()
	if len(f.pending) > 0 {
		last := "none"
		if n := len(f.report.FailoverErrors); n > 0 {
			last = f.report.FailoverErrors[n-1]
		}
		return fmt.Errorf("deadline reached with %d of %d events acknowledged (last error: %s)",
			f.nAcked, len(f.events), last)
	}
	return nil
}

// syncSession sends the pending windows one at a time on conn. SyncClient.Send returns
// how many events of the window the server acknowledged and the error, if any.
func (f *failover) syncSession(conn net.Conn, addr string) error {
	cl, err := v2.NewSyncClientWithConn(conn, f.opts...)
	if err != nil {
		conn.Close()
		return err
	}
	defer cl.Close()
	for len(f.pending) > 0 {
		win := f.pending[0]
		f.keepPace()
		f.markSent(win)
		n, err := cl.Send(f.payload(win))
		n = clamp(n, len(win))
		f.ack(addr, win[:n])
		if err != nil {
			if n < len(win) {
				f.pending[0] = win[n:]
			} else {
				f.pending = f.pending[1:]
			}
			return fmt.Errorf("%s: window of %d events, %d acknowledged: %w", addr, len(win), n, err)
		}
		f.pending = f.pending[1:]
	}
	return nil
}

// asyncSession pipelines the pending windows on conn. AsyncClient calls back exactly
// once per window, in order, from its ACK goroutine: with the window size on success,
// with what AwaitACK returned on an ACK error, and with 0 for every window still
// queued after an error (its ackLoop drains the queue that way). Once the first error
// is seen no further window is written; when every callback has run, the pending list
// becomes each sent window's unacknowledged rest followed by the windows not sent.
func (f *failover) asyncSession(conn net.Conn, addr string) error {
	cl, err := v2.NewAsyncClientWithConn(conn, f.inflight, f.opts...)
	if err != nil {
		conn.Close()
		return err
	}
	type sentWindow struct {
		events []int
		n      int
	}
	var (
		wg     sync.WaitGroup
		sent   []*sentWindow
		failed error // first error reported by a callback or by Send; guarded by f.mu
	)
	for _, win := range f.pending {
		f.mu.Lock()
		stop := failed != nil
		f.mu.Unlock()
		if stop {
			break
		}
		w := &sentWindow{events: win}
		f.keepPace()
		sent = append(sent, w)
		f.markSent(win)
		wg.Add(1)
		err := cl.Send(func(seq uint32, err error) {
			defer wg.Done()
			n := clamp(int(seq), len(w.events))
			f.mu.Lock()
			defer f.mu.Unlock()
			w.n = n
			f.ackLocked(addr, w.events[:n])
			if err != nil && failed == nil {
				failed = fmt.Errorf("%s: window of %d events, %d acknowledged: %w",
					addr, len(w.events), n, err)
			}
		}, f.payload(win))
		if err != nil {
			break // the callback reports the same error
		}
	}
	// Every window Send accepted gets its callback: an ACK, an ACK timeout, or the
	// drain after an error. Close only afterwards: AsyncClient.Close closes the queue
	// Send writes to, so it must not race a Send.
	wg.Wait()
	cl.Close()

	rest := make([][]int, 0, len(f.pending))
	for _, w := range sent {
		if w.n < len(w.events) {
			rest = append(rest, w.events[w.n:])
		}
	}
	f.pending = append(rest, f.pending[len(sent):]...)
	f.mu.Lock()
	defer f.mu.Unlock()
	if failed == nil && len(f.pending) > 0 {
		failed = errors.New(addr + ": connection ended with windows unacknowledged")
	}
	return failed
}

func (f *failover) payload(win []int) []interface{} {
	out := make([]interface{}, len(win))
	for i, e := range win {
		out[i] = f.events[e]
	}
	return out
}

// keepPace waits until -pace has passed since the last window's send began: a rate,
// not a synchronisation (a test whose load must outlast some server-side timer gets a
// load that lasts long enough on a fast machine too).
func (f *failover) keepPace() {
	if f.pace > 0 {
		if wait := time.Until(f.lastSend.Add(f.pace)); wait > 0 {
			time.Sleep(wait)
		}
	}
	f.lastSend = time.Now()
}

func (f *failover) markSent(win []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range win {
		f.sends[e]++
	}
}

func (f *failover) ack(addr string, events []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ackLocked(addr, events)
}

// ackLocked records events as acknowledged by addr and, with -progress, appends the
// running total. An event is never resent once acknowledged, so it is acked once.
func (f *failover) ackLocked(addr string, events []int) {
	if len(events) == 0 {
		return
	}
	for _, e := range events {
		if !f.acked[e] {
			f.acked[e] = true
			f.nAcked++
		}
	}
	f.ackedBy[addr] += len(events)
	if f.progress != nil {
		fmt.Fprintf(f.progress, "acked %d\n", f.nAcked)
	}
}

func (f *failover) ackedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nAcked
}

func (f *failover) noteError(err error) {
	if len(f.report.FailoverErrors) < maxReportedErrors {
		f.report.FailoverErrors = append(f.report.FailoverErrors, err.Error())
	}
}

// nextBackoff doubles the wait after a failure without progress, from -backoff up
// to ten times it.
func (f *failover) nextBackoff(wait time.Duration) time.Duration {
	if wait < f.backoff {
		return f.backoff
	}
	if wait *= 2; wait > 10*f.backoff {
		wait = 10 * f.backoff
	}
	return wait
}

// finishReport fills the counts that are only known at the end.
func (f *failover) finishReport() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.report.Hosts = f.hosts[:]
	f.report.AckedBy = f.ackedBy
	f.report.ResentIDs = []string{}
	if f.report.FailoverErrors == nil {
		f.report.FailoverErrors = []string{}
	}
	for e, n := range f.sends {
		if n > 1 {
			f.report.Resent++
			if e < len(f.ids) && f.ids[e] != "" {
				f.report.ResentIDs = append(f.report.ResentIDs, f.ids[e])
			}
		}
	}
}

// eventsSent is every event handed to go-lumber, resends included.
func (f *failover) eventsSent() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	total := 0
	for _, n := range f.sends {
		total += n
	}
	return total
}

func clamp(n, max int) int {
	if n < 0 {
		return 0
	}
	if n > max {
		return max
	}
	return n
}
