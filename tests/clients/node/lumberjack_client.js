#!/usr/bin/env node
'use strict'
// Drives the npm package lumberjack-client (1.0.3), a small Lumberjack v2 client that
// always compresses: every send is `2W <n>` + `2C <zlib(2J 1..n)>` (pako.deflate,
// zlib level 6).
//
// How the library sends: log(event) queues while the socket connects and flushes the
// queue as ONE window on connect; once connected, every log(event) is sent at once as
// its own window of one event. It never waits for, reads or reports ACKs (it has no
// 'data' handler), and on close it reconnects forever; events logged while
// disconnected are silently dropped.
//
// So this script sends, on one connection: a first window of -window N events (logged
// before the connection is up), then -singles M windows of one event each, written
// back to back without waiting for ACKs (pipelined, as the library does). The library
// gives no ACK information, so the script itself reads the server's answers from the
// library's socket: it expects, in order, ACK N, then ACK 1 per single; ACK 0
// (keep-alive) is allowed in between. Exit 0 only if all windows were acked.

const fs = require('fs')
const LumberjackClient = require('lumberjack-client')
const { filebeatEvent, parseArgs, splitAddr, startRun } = require('./events')

let opts
try {
  opts = parseArgs(process.argv.slice(2), { addr: '127.0.0.1:5044', window: 5, singles: 2, id: 'ljc', timeout: '30', dump: '' })
} catch (e) {
  process.stderr.write(`lumberjack_client: ${e.message}\n`)
  process.exit(2)
}

const first = []
for (let i = 0; i < opts.window; i++) first.push(filebeatEvent(opts.id, 0, i, i))
const singles = []
for (let w = 1; w <= opts.singles; w++) singles.push(filebeatEvent(opts.id, w, 0, opts.window + w - 1))
const all = first.concat(singles)
if (opts.dump) fs.writeFileSync(opts.dump, all.map((e) => JSON.stringify(e) + '\n').join(''))

const expectedAcks = [opts.window].concat(singles.map(() => 1))
const res = {
  client: 'lumberjack-client',
  version: require('lumberjack-client/package.json').version,
  compress: 'pako.deflate default (zlib level 6)',
  window: opts.window,
  windows: expectedAcks.length,
  window_sizes: expectedAcks,
  events_sent: 0,
  events_acked: 0,
  acks: [],
  keepalives: 0,
  ids: all.map((e) => e.test_id),
}
const { done, timer } = startRun(res, opts.timeout)

const client = new LumberjackClient({ ...splitAddr(opts.addr) }) // connects at once
for (const e of first) client.log(e) // queued: one window on connect
res.events_sent += first.length
const socket = client.socket

socket.on('connect', () => {
  // the library's own connect callback (registered first) has flushed the queue
  for (const e of singles) client.log(e) // connected: one window each, no waiting
  res.events_sent += singles.length
})

let pending = Buffer.alloc(0)
let nth = 0
socket.on('data', (chunk) => {
  pending = Buffer.concat([pending, chunk])
  while (pending.length >= 6) {
    const version = String.fromCharCode(pending[0])
    const type = String.fromCharCode(pending[1])
    const seq = pending.readUInt32BE(2)
    pending = pending.subarray(6)
    if (version !== '2' || type !== 'A') return done(new Error(`unexpected frame ${version}${type} from server`))
    if (seq === 0) {
      res.keepalives++
      continue
    }
    res.acks.push(seq)
    if (nth >= expectedAcks.length) return done(new Error(`unexpected extra ACK ${seq}`))
    if (seq !== expectedAcks[nth]) return done(new Error(`window ${nth}: ACK ${seq}, expected ${expectedAcks[nth]}`))
    res.events_acked += seq
    nth++
    if (nth === expectedAcks.length) {
      clearTimeout(timer)
      return done(null)
    }
  }
})
socket.on('close', () => done(new Error(`connection closed after ${nth} of ${expectedAcks.length} ACKs`)))
socket.on('error', (e) => done(new Error(`socket error: ${e.message}`)))
