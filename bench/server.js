// One server process of a bench target, driven by bench/run.js over IPC.
//   node --expose-gc bench/server.js <target-module> <layer> <publisher|follower>
// The publisher role also runs the load driver: publishes enter the system in this process only,
// open-loop (on a schedule that never waits for deliveries), stamped with their scheduled time.
import { collectGarbage, groupName, makePayloadFactory, monoMs, serveIpc } from './lib/common.js'

const [moduleName, layerKind, role] = process.argv.slice(2)
const options = JSON.parse(process.env.BENCH_SERVER_OPTIONS ?? '{}')

const target = await import(`./targets/${moduleName}.js`)
let server
try {
  server = await target.start({ layer: layerKind, ...options })
} catch (err) {
  process.send({ type: 'failed', unavailable: err?.code === 'BENCH_UNAVAILABLE', error: err?.message ?? String(err) })
  process.exit(0)
}

const groupSeq = [] // last sequence number published per group index
let publishErrors = 0
let firstPublishError

function runPhase ({ rate, durationMs, groups, payloadBytes, groupOffset = 0 }) {
  const payload = makePayloadFactory(payloadBytes)
  const names = Array.from({ length: groups }, (_, i) => groupName(i))
  for (let g = groupSeq.length; g < groups; g++) groupSeq[g] = 0
  const total = Math.max(1, Math.round(rate * durationMs / 1000))
  const interval = 1000 / rate
  const start = monoMs()
  let sent = 0
  let maxLagMs = 0
  const onError = err => {
    publishErrors++
    firstPublishError ??= err?.stack ?? String(err)
  }
  return new Promise(resolve => {
    function tick () {
      const now = monoMs()
      const due = Math.min(total, Math.floor((now - start) / interval) + 1)
      if (due > sent) maxLagMs = Math.max(maxLagMs, now - (start + sent * interval))
      while (sent < due) {
        const g = (sent + groupOffset) % groups
        const seq = ++groupSeq[g]
        try {
          const pending = server.publish(names[g], payload(seq, g, start + sent * interval))
          if (pending !== undefined) pending.then(undefined, onError)
        } catch (err) {
          onError(err)
        }
        sent++
      }
      // Sleep until the next message is due (at least 1 ms): no idle ticking at low rates.
      if (sent < total) setTimeout(tick, Math.max(1, Math.floor(start + sent * interval - monoMs())))
      else resolve({ published: sent, elapsedMs: monoMs() - start, maxLagMs, lastSeq: groupSeq.slice(0, groups), publishErrors, firstPublishError })
    }
    tick()
  })
}

// CPU profile of a chosen phase only (same .cpuprofile format as `node --cpu-prof`), so that
// connection set-up does not blur the fan-out path.
let profiler
async function profileStart () {
  const { Session } = await import('node:inspector')
  profiler = new Session()
  profiler.connect()
  const post = (method, params) => new Promise((resolve, reject) => profiler.post(method, params, (err, res) => err ? reject(err) : resolve(res)))
  await post('Profiler.enable')
  await post('Profiler.setSamplingInterval', { interval: 200 })
  await post('Profiler.start')
  profiler.stopTo = async file => {
    const { profile } = await post('Profiler.stop')
    const { writeFileSync } = await import('node:fs')
    writeFileSync(file, JSON.stringify(profile))
    profiler.disconnect()
  }
}

// Event-loop delay during a chosen phase (--loop-delay): how long the process held every timer
// and socket back, at 1 ms resolution.
let loopDelay
async function loopDelayStart () {
  const { monitorEventLoopDelay } = await import('node:perf_hooks')
  loopDelay = monitorEventLoopDelay({ resolution: 1 })
  loopDelay.enable()
}
function loopDelayStop () {
  loopDelay.disable()
  const ms = ns => Math.round(ns / 1e4) / 100
  return { p99Ms: ms(loopDelay.percentile(99)), p999Ms: ms(loopDelay.percentile(99.9)), maxMs: ms(loopDelay.max) }
}

serveIpc({
  run: msg => runPhase(msg),
  loopDelayStart: () => loopDelayStart(),
  loopDelayStop: () => loopDelayStop(),
  profileStart: () => profileStart(),
  profileStop: async ({ file }) => { await profiler.stopTo(file) },
  stats: () => ({ connections: server.connections(), rss: process.memoryUsage.rss(), publishErrors, ...server.stats?.() }),
  gc: async () => {
    await collectGarbage()
    return { rss: process.memoryUsage.rss(), heapUsed: process.memoryUsage().heapUsed }
  },
  exit: async () => {
    // A clean exit writes the --cpu-prof profile; closing 10,000 sockets politely is not measured.
    setTimeout(() => process.exit(0), 10)
    return {}
  }
})

process.send({ type: 'ready', port: server.port, pid: process.pid })
