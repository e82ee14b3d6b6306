#!/usr/bin/env node
'use strict'
// Drives the npm package lumberjack-protocol (1.0.7), a Lumberjack v1 client in the
// manner of logstash-forwarder: version '1', uncompressed 'D' frames of string pairs.
//
// How the library sends and acks: on connect it writes ONE `1W <windowSize>` frame,
// then each writeDataFrame(obj) is one `1D` frame with a running sequence number
// (1, 2, 3, ... for the whole connection; never another W). It treats the window as
// a sliding window (it drops events when more than 10 x windowSize are unacked), not
// as an exact count. It parses ACKs (asserting version '1': a '2A' answer is an error
// that drops the connection) and records the last value in socket.lastAck, emitting
// 'ack' on its internal ClientSocket; it never resends anything.
//
// So one exact window = one connection with windowSize N and exactly N events. For
// -windows K this script opens K connections one after the other, each sending one
// window of N events and waiting for ACK N before the next. -window-size W (default N)
// sets the library's windowSize apart from N, to reproduce its sliding-window use
// (W < N: more D frames than the one W frame announced; W > N: a window that never
// fills); the script still waits for ACK N on each connection. The ACK is read with the
// library's own parser ('ack' event of client._socket).
//
// The library connects with tls.connect only. To run it on a plain TCP port, this
// script substitutes tls.connect with a plain net.connect that reports
// 'secureConnect' on connect; all framing, sequence numbers and ACK parsing stay the
// library's own code.

const fs = require('fs')
const net = require('net')
const tls = require('tls')
const lumberjack = require('lumberjack-protocol')
const { v1Event, parseArgs, splitAddr, startRun } = require('./events')

let opts
try {
  opts = parseArgs(process.argv.slice(2), { addr: '127.0.0.1:5044', window: 5, windows: 1, 'window-size': 0, id: 'v1', timeout: '30', dump: '' })
} catch (e) {
  process.stderr.write(`v1_client: ${e.message}\n`)
  process.exit(2)
}

tls.connect = function plainConnect(options) {
  const s = net.connect({ host: options.host, port: options.port })
  s.once('connect', () => s.emit('secureConnect'))
  return s
}

const windows = []
for (let w = 0; w < opts.windows; w++) {
  const evs = []
  for (let i = 0; i < opts.window; i++) evs.push(v1Event(opts.id, w, i, w * opts.window + i))
  windows.push(evs)
}
const all = windows.flat()
if (opts.dump) fs.writeFileSync(opts.dump, all.map((e) => JSON.stringify(e) + '\n').join(''))

const res = {
  client: 'lumberjack-protocol',
  version: require('lumberjack-protocol/package.json').version,
  protocol: 1,
  window: opts.window,
  window_size_frame: opts['window-size'] || opts.window,
  windows: opts.windows,
  events_sent: 0,
  events_acked: 0,
  acks: [],
  keepalives: 0,
  ids: all.map((e) => e.test_id),
}
const { done } = startRun(res, opts.timeout)

function sendWindow(w) {
  if (w === windows.length) return done(null)
  const evs = windows[w]
  // reconnect: 0 would retry at once; a failed connection is an error here anyway
  const client = lumberjack.client(splitAddr(opts.addr), { windowSize: opts['window-size'] || evs.length, maxQueueSize: evs.length + 1, reconnect: 3600 * 1000 })
  const sock = client._socket // the library's ClientSocket for this connection
  sock.on('ack', (seq) => {
    if (seq === 0) {
      res.keepalives++
      return
    }
    res.acks.push(seq)
    if (seq > evs.length) return done(new Error(`window ${w}: ACK ${seq} above the window's last sequence number ${evs.length}`))
    if (seq < evs.length) return // partial ACK: keep waiting
    res.events_acked += evs.length
    const raw = sock._socket // the library's close() does not close the TCP socket itself
    client.close()
    if (raw) raw.destroy()
    sendWindow(w + 1)
  })
  client.on('disconnect', (err) => {
    if (!client._closed) done(new Error(`window ${w}: disconnected${err ? ': ' + err.message : ''}`))
  })
  for (const e of evs) client.writeDataFrame(e) // queued until connected, then D frames 1..N
  res.events_sent += evs.length
}

sendWindow(0)
