// Shared by the harness, the server processes and the load generators.
import { spawn, spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/**
 * A bench script's flags, `--name=value` or a bare `--name` (true). Anything not in `known` stops
 * the script before it measures anything (a mistyped flag must not start an hour-long run), and
 * `--help` prints the script's opening comment, its usage; `script` is its `import.meta.url`.
 */
export function parseFlags (argv, known, script) {
  const flags = {}
  for (const arg of argv) {
    const m = /^--([a-z][a-z-]*)(?:=(.*))?$/.exec(arg)
    if (m?.[1] === 'help') {
      process.stdout.write(usageOf(script))
      process.exit(0)
    }
    if (m === null || !known.includes(m[1])) {
      process.stderr.write(`${arg}: not a flag of this script; it knows --${known.join(', --')} (--help)\n`)
      process.exit(2)
    }
    flags[m[1]] = m[2] ?? true
  }
  return flags
}

/** The comment lines a script opens with (after its `#!` line), without their `// `. */
function usageOf (script) {
  const lines = readFileSync(fileURLToPath(script), 'utf8').split('\n')
  const comment = lines.slice(lines[0].startsWith('#!') ? 1 : 0)
  const end = comment.findIndex(line => !line.startsWith('//'))
  return comment.slice(0, end).map(line => line.replace(/^\/\/ ?/, '')).join('\n') + '\n'
}

/** Whether processes can be pinned to a CPU here: `taskset` is installed and works. */
export function hasTaskset () {
  return spawnSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' }).status === 0
}

/** `node …nodeArgs` on CPU `cpu` (taskset) when `pin`, else wherever the system runs it. */
export function spawnNode (nodeArgs, { pin, cpu, ...options }) {
  return pin
    ? spawn('taskset', ['-c', String(cpu), process.execPath, ...nodeArgs], options)
    : spawn(process.execPath, nodeArgs, options)
}

/** Resolves once `child` has exited (at once when it already has). */
export function exited (child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise(resolve => child.once('exit', resolve))
}

/**
 * Opens `n` plain `ws` clients, 100 at a time, to `urlOf(i)`; `setUp(ws)` adds each one's
 * listeners before it opens. Rejects with the first that fails to open.
 */
export async function openClients (n, urlOf, setUp) {
  const { WebSocket } = await import('ws')
  for (let i = 0; i < n; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, n - i) }, (_, j) => new Promise((resolve, reject) => {
      const ws = new WebSocket(urlOf(i + j), { perMessageDeflate: false })
      setUp(ws)
      ws.once('open', resolve)
      ws.once('error', reject)
    })))
  }
}

/**
 * A client process of `cpu-split.js` and `instructions.js`: opens `n` clients of
 * `/ws/<group>` (`groupOf(i)`, the i-th one's group index), counts what they receive, tells its
 * parent 'open' once every one is, then answers each message from the parent with the count.
 */
export async function countingClients (port, n, groupOf) {
  let received = 0
  await openClients(n, i => `ws://127.0.0.1:${port}/ws/${groupName(groupOf(i))}`, ws => {
    ws.on('message', () => { received++ })
  })
  process.send('open')
  process.on('message', () => process.send(received))
}

/**
 * Starts a target in this process by the name `cpu-split.js` and `instructions.js` take:
 * `<ws|channels>-<memory|redis>`, then any of `-shared`, `-metrics`, `-durable` (metrics and a
 * history), `-sync` and `-alt` (the build at BENCH_ALT_ENTRY). `options` go to its start() too.
 */
export async function startNamedTarget (target, options) {
  const [name, layer, ...variants] = target.split('-')
  const mod = await import(`../targets/${name}.js`)
  const durable = variants.includes('durable')
  return mod.start({
    layer,
    entry: variants.includes('alt') ? process.env.BENCH_ALT_ENTRY : undefined,
    shared: variants.includes('shared'),
    metrics: durable || variants.includes('metrics'),
    history: durable,
    sync: variants.includes('sync'),
    redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    logFile: '/dev/null',
    ...options
  })
}

/** Milliseconds on CLOCK_MONOTONIC: the same clock in every process of this machine. */
export function monoMs () {
  const [s, ns] = process.hrtime()
  return s * 1e3 + ns / 1e6
}

export const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

/**
 * Waits until `check()` (sync or async) is true, looking every `everyMs`; past `ms`, rejects with
 * `what` (a text, or a function that makes it then, to show the state it stopped at).
 */
export async function until (what, check, ms, everyMs = 20) {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${typeof what === 'function' ? what() : what}: not within ${ms} ms`)
    await sleep(everyMs)
  }
}

/**
 * Three full collections 50 ms apart (when the process runs with `--expose-gc`), so that what
 * `process.memoryUsage()` reads next is what the process holds, not garbage it has yet to free.
 */
export async function collectGarbage () {
  for (let i = 0; i < 3; i++) {
    globalThis.gc?.()
    await sleep(50)
  }
}

export function groupName (index) {
  return `g${index}`
}

/**
 * The bench payload, the same for every target: `{"s":seq,"g":group,"t":sentAtMs,"p":"xx…"}`,
 * padded so that its JSON is exactly `payloadBytes` long. Key order is fixed so the generator can
 * read `s` and `g` at a known offset without parsing JSON.
 */
export function makePayloadFactory (payloadBytes) {
  const pad = 'x'.repeat(payloadBytes)
  return function payload (seq, group, sentAtMs) {
    const t = Math.round(sentAtMs * 1000) / 1000
    // {"s":,"g":,"t":,"p":""} is 23 characters around the three numbers.
    const used = 23 + digits(seq) + digits(group) + String(t).length
    return { s: seq, g: group, t, p: pad.slice(0, Math.max(0, payloadBytes - used)) }
  }
}

function digits (n) {
  return n < 10 ? 1 : n < 100 ? 2 : n < 1000 ? 3 : n < 10000 ? 4 : n < 100000 ? 5 : String(n).length
}

const TICKS_PER_SECOND = 100 // USER_HZ on Linux

/** User+system CPU time of a process (all threads) in microseconds, from /proc; null if gone. */
export function procCpuUs (pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1')
    // Fields after the command name, which may contain spaces, start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const utime = Number(fields[11])
    const stime = Number(fields[12])
    return (utime + stime) * (1e6 / TICKS_PER_SECOND)
  } catch {
    return null
  }
}

/**
 * CPU time of a process (all threads) in microseconds, to the nanosecond, from each thread's
 * /proc schedstat (procCpuUs counts 10 ms ticks); null if gone.
 */
export function procCpuPreciseUs (pid) {
  return procSchedstatUs(pid, 0)
}

/** Time a process's threads were ready to run but waited for a core, in microseconds; null if gone. */
export function procRunQueueWaitUs (pid) {
  return procSchedstatUs(pid, 1)
}

/** A field of /proc schedstat (0: on a core, 1: waiting for one), summed over threads, in µs. */
function procSchedstatUs (pid, field) {
  try {
    let ns = 0
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'latin1').split(' ')[field])
      } catch {} // a thread that ended meanwhile
    }
    return ns / 1000
  } catch {
    return null
  }
}

/** Resident set size in bytes, from /proc; null if gone. */
export function procRssBytes (pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'latin1')
    const m = /VmRSS:\s+(\d+) kB/.exec(status)
    return m === null ? null : Number(m[1]) * 1024
  } catch {
    return null
  }
}

/** Request/response over a child's IPC channel: `{ id, ...msg }` out, `{ id, ...reply }` back. */
export function ipcClient (child, name) {
  let nextId = 1
  const pending = new Map()
  child.on('message', msg => {
    if (msg === null || typeof msg !== 'object' || msg.id === undefined) return
    const p = pending.get(msg.id)
    if (p === undefined) return
    pending.delete(msg.id)
    if (msg.error !== undefined) p.reject(new Error(`${name}: ${msg.error}`))
    else p.resolve(msg)
  })
  child.on('exit', (code, signal) => {
    for (const p of pending.values()) p.reject(new Error(`${name} exited (${code ?? signal}) with a request pending`))
    pending.clear()
  })
  return function request (cmd, args = {}, timeoutMs = 120_000) {
    const id = nextId++
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        pending.delete(id)
        reject(new Error(`${name}: "${cmd}" timed out after ${timeoutMs} ms`))
      }, timeoutMs)
      pending.set(id, {
        resolve: v => { clearTimeout(timer); resolve(v) },
        reject: e => { clearTimeout(timer); reject(e) }
      })
      child.send({ id, cmd, ...args })
    })
  }
}

/** Serves `{ id, cmd }` requests from the parent with `handlers[cmd](msg)`. */
export function serveIpc (handlers) {
  process.on('message', async msg => {
    if (msg === null || typeof msg !== 'object' || msg.id === undefined) return
    const handler = handlers[msg.cmd]
    try {
      if (handler === undefined) throw new Error(`unknown command ${msg.cmd}`)
      const reply = await handler(msg)
      process.send({ id: msg.id, ...(reply ?? {}) })
    } catch (err) {
      process.send({ id: msg.id, error: err?.stack ?? String(err) })
    }
  })
  // The parent going away ends this process: no orphans holding ports and file descriptors.
  process.on('disconnect', () => process.exit(0))
}

/** Busy time (everything but idle and iowait) per CPU in microseconds, from /proc/stat. */
export function cpuBusyUs () {
  const out = []
  try {
    for (const line of readFileSync('/proc/stat', 'latin1').split('\n')) {
      const m = /^cpu(\d+) (.*)$/.exec(line)
      if (m === null) continue
      const [user, nice, system, idle, iowait, irq, softirq, steal] = m[2].trim().split(/\s+/).map(Number)
      out[Number(m[1])] = (user + nice + system + irq + softirq + steal) * (1e6 / TICKS_PER_SECOND)
      void idle; void iowait
    }
  } catch {}
  return out
}

/** The middle value (of an even count, the upper of the two middle ones). */
export function median (values) {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]
}
