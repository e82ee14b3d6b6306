'use strict'
// Filebeat-shaped test events, the same scheme as the Go and Python clients: the g-th
// event of a run has a fixed @timestamp (three UTC days, a few ms either side of
// midnight 2025-04-05/06) and a unique test_id "<prefix>-<window>-<index>".

const ANCHORS = [
  Date.UTC(2025, 3, 5, 10, 23, 45, 0),
  Date.UTC(2025, 3, 5, 23, 59, 59, 990),
  Date.UTC(2025, 3, 6, 0, 0, 0, 0),
  Date.UTC(2025, 3, 4, 18, 7, 3, 250),
]

const PROMPTS = [
  '你好，请介绍一下你自己',
  '用三句话解释什么是大语言模型',
  '写一首关于"秋天"的诗，\n要求押韵',
  'Translate to English: 今天天气很好 🌤️',
  '路径 C:\\models\\qwen 里有什么? <b>&amp;</b>',
  '',
]

function timestamp(g) {
  return new Date(ANCHORS[g % ANCHORS.length] + g)
}

// The inference service's own log line (a JSON string), as Filebeat reads it.
function inferenceLine(prefix, window, index, g) {
  const ts = timestamp(g)
  const error = g % 7 === 3
  return JSON.stringify({
    timestamp: ts.toISOString().replace(/\.\d{3}Z$/, 'Z'),
    level: error ? 'ERROR' : 'INFO',
    request_id: `req_${prefix}_${window}_${index}`,
    prompt: PROMPTS[g % PROMPTS.length],
    response_length: error ? 0 : 100 + (g * 37) % 900,
    inference_time_ms: 200 + (g * 53) % 2000,
    status: error ? 'error' : 'success',
  })
}

function filebeatEvent(prefix, window, index, g) {
  return {
    '@timestamp': timestamp(g).toISOString(),
    message: inferenceLine(prefix, window, index, g),
    log: { file: { path: '/var/log/qwen/infer.log' }, offset: g * 256 },
    host: { name: 'node-1' },
    agent: { type: 'filebeat' },
    ecs: { version: '8.0.0' },
    test_id: `${prefix}-${window}-${index}`,
  }
}

// A logstash-forwarder style v1 event: string key/value pairs only.
function v1Event(prefix, window, index, g) {
  return {
    line: inferenceLine(prefix, window, index, g),
    file: '/var/log/qwen/infer.log',
    offset: String(g * 256),
    host: 'node-1',
    test_id: `${prefix}-${window}-${index}`,
  }
}

// Minimal "-flag value" / "--flag value" / "--flag=value" parser.
function parseArgs(argv, defaults) {
  const out = { ...defaults }
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i]
    if (!a.startsWith('-')) throw new Error(`unexpected argument ${a}`)
    a = a.replace(/^--?/, '')
    let v
    if (a.includes('=')) [a, v] = [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]
    else v = argv[++i]
    if (!(a in defaults)) throw new Error(`unknown flag -${a}`)
    if (v === undefined) throw new Error(`flag -${a} needs a value`)
    out[a] = typeof defaults[a] === 'number' ? Number(v) : v
  }
  return out
}

function splitAddr(addr) {
  const i = addr.lastIndexOf(':')
  return { host: addr.slice(0, i), port: Number(addr.slice(i + 1)) }
}

let finished = false
// Print the result line once and exit (0 only if everything sent was acknowledged).
function finish(res, err) {
  if (finished) return
  finished = true
  if (err) res.error = String(err && err.message ? err.message : err)
  process.stdout.write(JSON.stringify(res) + '\n', () => {
    if (err || res.events_acked !== res.events_sent) {
      process.stderr.write(`${res.client}: ${res.error || 'not every event was acknowledged'}\n`, () => process.exit(1))
    } else {
      process.exit(0)
    }
  })
}

// Starts the run's clock and deadline; the returned done(err) reports once.
function startRun(res, timeoutSecs) {
  const started = Date.now()
  const done = (err) => {
    res.elapsed_ms = Date.now() - started
    finish(res, err)
  }
  const timer = setTimeout(() => done(new Error(`timed out after ${timeoutSecs}s waiting for ACKs`)), Number(timeoutSecs) * 1000)
  return { done, timer }
}

module.exports = { filebeatEvent, v1Event, parseArgs, splitAddr, finish, startRun }
