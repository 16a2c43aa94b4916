#!/usr/bin/env node
// A seeded, model-based fuzz of "nothing lost between two connections". Server processes
// (bench/fuzz-server.js) share one RedisChannelLayer on a redis-server of the fuzz's own; groups
// room.a, room.b, room.c keep history (1,000 messages, 300 s) and announce presence; N clients
// (fastify-channels/client, routed to a live server at each connect) join some of them; numbered
// messages go out through the servers (IPC) and through the harness's own layer, at a fixed rate,
// while faults are injected at times the seed fixes, and clients leave and join again with `since`.
// A seed and a fault fix the schedule (rooms, faults and their times, each message's room and
// sender), not how the processes interleave: a run that fails may need a few tries to fail again.
// Then, for every client and group, against what each groupSend resolved with (README: "What is
// recovered, and when gap() runs", "Where the guarantees stop"):
//   - every acknowledged message after the client's join is delivered exactly once, in offset
//     order, at the position its send got; only a gap() excuses what was sent up to it;
//   - between two gap()s offsets follow each other: none skipped (acknowledged or not), none repeated;
//   - gap() runs only after Redis lost its data (redis-restart): every other fault recovers;
//   - presence converges: layer.presence() names each member once within membershipLease + 5 s,
//     and so does every client's list (a server back from a cut-off sends its clients the list);
//   - no server exits unasked, no unhandled rejection, no join refused.
//   node bench/fuzz.js --seed=1 --fault=server-kill                 60 s (after a build)
//   node bench/fuzz.js --seed=7 --fault=all --seconds=30 --clients=12
// --fault: none, socket-kill (clients' sockets terminated), server-kill (SIGKILL, started again),
// server-term (SIGTERM: app.close(), started again), redis-restart (Redis SIGKILLed, started empty),
// redis-restart-persist (appendonly with fsync always: nothing lost), redis-conn-kill (CLIENT KILL of
// one process's connections to Redis, or of its subscriber only: cut off while the others go on),
// all (a mix of them).
// Other flags: --seconds=60 (of publishing; then up to ~50 s of draining and presence checks),
// --servers=3, --clients=8, --rate=40 (messages/s), --port=47000 (servers on port…port+servers-1,
// Redis on port+100; 0: free ports the system picks), --log=<file> (the servers' warnings, appended). Needs redis-server on PATH;
// its files go to a temporary directory (TMPDIR). Prints one JSON line; exit code 1 on a violation.
import { fork, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { RedisChannelLayer } from 'fastify-channels'
import { ChannelsClient } from 'fastify-channels/client'
import { exited, ipcClient, parseFlags, sleep, until } from './lib/common.js'

const FAULTS = ['socket-kill', 'server-kill', 'server-term', 'redis-restart', 'redis-restart-persist', 'redis-conn-kill']
const args = parseFlags(process.argv.slice(2), ['seed', 'fault', 'seconds', 'servers', 'clients', 'rate', 'port', 'log'], import.meta.url)
const FAULT = args.fault ?? 'none'
if (![...FAULTS, 'none', 'all'].includes(FAULT)) {
  process.stderr.write(`--fault=${FAULT}: one of none, ${FAULTS.join(', ')}, all\n`)
  process.exit(2)
}
const [SEED, SECONDS, SERVERS, CLIENTS, RATE, PORT] = ['seed', 'seconds', 'servers', 'clients', 'rate', 'port']
  .map((name, i) => Number(args[name] ?? [1, 60, 3, 8, 40, 47000][i]))
if (![SEED, SECONDS, SERVERS, CLIENTS, RATE, PORT].every(Number.isSafeInteger) || SECONDS < 15 || SERVERS < 1 || CLIENTS < 1 || RATE < 1) {
  process.stderr.write('--seed, --seconds (15 or more), --servers, --clients, --rate, --port: whole numbers\n')
  process.exit(2)
}
/** A port free on loopback now (for --port=0). */
function freePort () {
  return new Promise((resolve, reject) => {
    const server = net.createServer().once('error', reject)
    server.listen(0, '127.0.0.1', () => { const { port } = server.address(); server.close(() => resolve(port)) })
  })
}
const REDIS_PORT = PORT === 0 ? await freePort() : PORT + 100
const REDIS_URL = `redis://127.0.0.1:${REDIS_PORT}`
const PREFIX = `fz-${SEED}-${randomBytes(3).toString('hex')}`
const GROUPS = ['room.a', 'room.b', 'room.c']
const policies = { 'room.*': { history: { size: 1000, ttl: 300 }, presenceEvents: true } }
const LEASE = 5 // s: the presence entries of a SIGKILLed server go within LEASE + 5 s (README, Presence)
const persist = FAULT === 'redis-restart-persist' || FAULT === 'all'
const now = () => performance.now()

function mulberry32 (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = Math.imul(a ^ (a >>> 15), a | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

// The schedule: a function of the seed alone (what it sets off, and when each part ends, is not).
const rand = mulberry32(SEED)
const pick = (list, r) => list[Math.floor(r * list.length)]
const membership = Array.from({ length: CLIENTS }, () => GROUPS.filter(() => rand() < 0.6))
  .map(groups => groups.length > 0 ? groups : [pick(GROUPS, rand())])
const quietFrom = SECONDS * 1000 - 8000 // the last 8 s of publishing: nothing injected
const faults = []
const rejoins = []
if (FAULT !== 'none') {
  for (let t = 2000 + rand() * 3000; t < quietFrom; t += 2000 + rand() * 4000) {
    faults.push({ at: t, kind: FAULT === 'all' ? pick(FAULTS, rand()) : FAULT, r: rand(), downMs: 200 + rand() * 2800 })
  }
}
for (let t = 1000 + rand() * 4000; t < quietFrom; t += 2000 + rand() * 6000) rejoins.push({ at: t, r: rand() })
const publishRand = mulberry32(SEED ^ 0x5bd1e995) // each message's group and publisher

// What was sent and acknowledged, and the order of each group's epochs (first seen, first).
const acks = new Map(GROUPS.map(g => [g, new Map()])) // n → the position its groupSend resolved with
const epochs = new Map(GROUPS.map(g => [g, new Map()]))
function epochIndex (g, epoch) {
  const seen = epochs.get(g)
  if (!seen.has(epoch)) seen.set(epoch, seen.size)
  return seen.get(epoch)
}
const order = (g, p, q) => epochIndex(g, p.epoch) - epochIndex(g, q.epoch) || p.offset - q.offset
const counts = { sent: 0, acknowledged: 0, failedSends: 0, rejoins: 0, faults: {}, connectionsKilled: 0, crashes: 0, unhandled: 0, refused: 0, clientErrors: 0 }
const problems = []
const problem = (what, text) => { counts[what]++; if (problems.length < 10) problems.push(text) }
let lossyRestartAt = Infinity // gap() is owed from here on
process.on('unhandledRejection', err => problem('unhandled', `harness: ${err?.stack ?? err}`))

// Redis, started again on the same port and directory after each restart.
const redisDir = mkdtempSync(path.join(os.tmpdir(), 'fuzz-redis-'))
let redis = null
/** Sends inline commands to our Redis; resolves with all it answered ('' when it is not there). */
function redisSay (...commands) {
  return new Promise(resolve => {
    let text = ''
    const socket = net.connect(REDIS_PORT, '127.0.0.1')
    socket.setTimeout(2000, () => socket.destroy())
    socket.on('data', data => { text += data })
    socket.once('error', () => {})
    socket.once('close', () => resolve(text))
    socket.write([...commands, 'QUIT', ''].join('\r\n'))
  })
}
const ping = async () => (await redisSay('PING')).startsWith('+PONG')
async function startRedis () {
  redis = spawn('redis-server', ['--port', String(REDIS_PORT), '--bind', '127.0.0.1', '--save', '', '--appendonly', persist ? 'yes' : 'no',
    '--appendfsync', 'always', '--dir', redisDir], { stdio: 'ignore' })
  redis.on('error', err => problems.push(`redis-server: ${err.message}`))
  await until('redis-server answers', async () => redis.exitCode === null && await ping(), 10_000, 50)
}

const serverScript = fileURLToPath(new URL('./fuzz-server.js', import.meta.url))
// With --port=0 each server listens where the system says, and keeps that port when started again.
const servers = Array.from({ length: SERVERS }, (_, i) => ({ port: PORT === 0 ? 0 : PORT + i, up: false, stopping: false, child: null }))
function startServer (s) {
  const env = { ...process.env, REDIS_URL, LAYER_PREFIX: PREFIX, GROUPS: JSON.stringify(policies), LEASE: String(LEASE) }
  if (args.log !== undefined) env.LOG_FILE = path.resolve(String(args.log))
  const child = s.child = fork(serverScript, [String(s.port)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env })
  s.stopping = false
  s.request = ipcClient(child, `server ${s.port}`)
  child.on('message', msg => { if (msg?.type === 'unhandled') problem('unhandled', `server ${s.port}: ${msg.error}`) })
  child.once('exit', (code, signal) => {
    s.up = false
    if (!s.stopping) problem('crashes', `server ${s.port} exited unasked (${code ?? signal})`)
  })
  return new Promise((resolve, reject) => {
    child.on('message', msg => { if (msg?.type === 'ready') { s.port = msg.port; s.up = true; resolve() } })
    child.once('exit', code => reject(new Error(`server ${s.port} exited (${code}) before it was ready`)))
  })
}
async function stopServer (s, signal) {
  s.stopping = true
  s.up = false
  s.child.kill(signal)
  await Promise.race([exited(s.child), sleep(15_000)])
  s.child.kill('SIGKILL') // a SIGTERM that did not end it within 15 s
  await exited(s.child)
}

// A client: each socket it opens goes to the next server up, as through a load balancer.
function member (i) {
  const m = { id: `c${i}`, groups: membership[i], subs: new Map(), start: new Map(), events: new Map(), opens: 0, ws: null, next: i }
  class Routed extends WebSocket {
    constructor (url, protocols) {
      const up = servers.filter(s => s.up)
      const list = up.length > 0 ? up : servers
      super(`ws://127.0.0.1:${list[m.next++ % list.length].port}/ws?id=${m.id}`, protocols)
      m.ws = this
    }
  }
  m.client = new ChannelsClient('ws://127.0.0.1/ws', { WebSocket: Routed, maxDelay: 2000 })
  m.client.on('state', state => { if (state === 'open') m.opens++ })
  m.client.on('error', err => problem('clientErrors', `${m.id}: ${err?.code ?? ''} ${err?.message ?? err}`))
  for (const g of m.groups) {
    m.events.set(g, [])
    join(m, g)
  }
  return m
}
/** Joins `g`, from `since` when given (its events go on after the last subscription's). */
function join (m, g, since) {
  const events = m.events.get(g)
  const sub = m.client.join(g, {
    since,
    message (data, info) { epochIndex(g, info.epoch); events.push({ n: data.n, offset: info.offset, epoch: info.epoch }) },
    gap () { epochIndex(g, sub.position.epoch); events.push({ gap: sub.position, at: now() }) },
    error (err) { problem('refused', `${m.id} ${g}: re-join refused: ${err.code}`) }
  })
  m.subs.set(g, sub)
  if (since !== undefined) events.push({ rejoin: since })
  sub.ready.then(({ position }) => {
    epochIndex(g, position.epoch)
    if (since === undefined) m.start.set(g, position)
  }, err => problem('refused', `${m.id} ${g}: join refused: ${err.code}`))
}

// The checker: per client and group, the deliveries walked against the acknowledged sends.
function check () {
  const r = { delivered: 0, lost: 0, duplicated: 0, outOfOrder: 0, skipped: 0, misplaced: 0, reused: 0, gaps: 0, unexpectedGaps: 0, againAfterGap: 0, notJoined: 0, first: [] }
  const ackedAt = new Map(GROUPS.map(g => [g, new Set([...acks.get(g).values()].map(p => `${p.epoch}:${p.offset}`))]))
  for (const g of GROUPS) r.reused += acks.get(g).size - ackedAt.get(g).size // two sends given one position
  for (const m of members) {
    for (const g of m.groups) {
      const flag = (what, e) => { r[what]++; if (r.first.length < 5) r.first.push(`${what}: ${m.id} ${g} n=${e.n} at ${e.epoch}:${e.offset}`) }
      let cursor = m.start.get(g) // the last position the client is known to have
      if (cursor === undefined) { r.notJoined++; continue }
      let covered = cursor // what was sent up to here is not owed: before the join, or before a gap()
      let restart = null // after a gap(): the position it named, which the next message may be
      let seen = new Set() // delivered since the last gap()
      const ever = new Set()
      for (const e of m.events.get(g)) {
        if (e.rejoin !== undefined) continue // a re-join from `since` goes on from the cursor
        if (e.gap !== undefined) {
          r.gaps++
          if (e.at < lossyRestartAt) flag('unexpectedGaps', e.gap)
          cursor = restart = e.gap
          if (order(g, e.gap, covered) > 0) covered = e.gap
          seen = new Set()
          continue
        }
        r.delivered++
        const ack = acks.get(g).get(e.n)
        if (ack !== undefined && (ack.epoch !== e.epoch || ack.offset !== e.offset)) flag('misplaced', e)
        if (seen.has(e.n)) { flag('duplicated', e); continue }
        if (ever.has(e.n)) r.againAfterGap++ // allowed: the reload after gap() covers it
        seen.add(e.n)
        ever.add(e.n)
        const resumes = restart !== null && e.epoch === restart.epoch && e.offset === restart.offset
        restart = null
        if (!resumes) {
          if (e.epoch !== cursor.epoch) { flag('outOfOrder', e); cursor = e; continue } // a new epoch without gap()
          if (e.offset <= cursor.offset) { flag('outOfOrder', e); continue }
          for (let o = cursor.offset + 1; o < e.offset; o++) if (!ackedAt.get(g).has(`${e.epoch}:${o}`)) flag('skipped', { epoch: e.epoch, offset: o })
        }
        cursor = e
      }
      for (const [n, p] of acks.get(g)) if (order(g, p, covered) > 0 && !ever.has(n)) flag('lost', { n, ...p })
    }
  }
  return r
}

/** Until layer.presence() and every client's list name each member of the group once. */
async function presenceSettles (ms) {
  const ids = entries => entries.map(e => e.info?.id).sort().join(' ')
  const t = now()
  let truth, lists
  do {
    truth = []
    lists = []
    for (const g of GROUPS) {
      const want = ids(members.filter(m => m.groups.includes(g)).map(m => ({ info: { id: m.id } })))
      const listed = await layer.presence(g).then(ids, err => `(${err.code ?? err.message})`)
      if (listed !== want) truth.push(`${g}: presence() [${listed}], members [${want}]`)
      for (const m of members) {
        if (m.groups.includes(g) && ids(m.subs.get(g).presence) !== want) lists.push(`${m.id} ${g}: list [${ids(m.subs.get(g).presence)}]`)
      }
    }
    if (truth.length + lists.length === 0) return { ok: true, settledMs: Math.round(now() - t) }
    await sleep(250)
  } while (now() - t < ms)
  return { ok: false, wrongTruth: truth.length, staleLists: lists.length, first: [...truth, ...lists].slice(0, 3) }
}

async function inject (f) {
  counts.faults[f.kind] = (counts.faults[f.kind] ?? 0) + 1
  if (f.kind === 'socket-kill') {
    const k = 1 + Math.floor(f.r * 1000) % Math.ceil(CLIENTS / 2)
    for (let j = 0; j < k; j++) {
      const ws = members[(Math.floor(f.r * CLIENTS) + j) % CLIENTS].ws
      if (ws?.readyState === WebSocket.OPEN) ws.terminate()
    }
  } else if (f.kind === 'server-kill' || f.kind === 'server-term') {
    const s = pick(servers, f.r)
    await stopServer(s, f.kind === 'server-kill' ? 'SIGKILL' : 'SIGTERM')
    await sleep(f.downMs)
    await startServer(s)
  } else if (f.kind === 'redis-conn-kill') {
    // The layer names its connections <prefix>:<process token>:<cmd|sub|pop>.
    const conns = [...(await redisSay('CLIENT LIST')).matchAll(/^id=(\d+) .*? name=\S+:(\w+):(cmd|sub|pop) /gm)]
    const token = pick([...new Set(conns.map(c => c[2]))].sort(), f.r)
    const subOnly = (f.r * 100) % 1 < 0.5
    const ids = conns.filter(c => c[2] === token && (!subOnly || c[3] === 'sub')).map(c => `CLIENT KILL ID ${c[1]}`)
    counts.connectionsKilled += ids.length
    await redisSay(...ids)
  } else {
    const lossy = f.kind === 'redis-restart'
    if (lossy) lossyRestartAt = Math.min(lossyRestartAt, now())
    redis.kill('SIGKILL')
    await exited(redis)
    if (lossy) rmSync(path.join(redisDir, 'appendonlydir'), { recursive: true, force: true })
    await sleep(f.downMs)
    await startRedis()
  }
}

let inFlight = 0
async function publish (n) {
  const g = pick(GROUPS, publishRand())
  const s = servers[Math.floor(publishRand() * (SERVERS + 1)) - 1] // undefined: the harness's own layer
  counts.sent++
  inFlight++
  try {
    const position = s?.up
      ? (await s.request('publish', { group: g, n }, 10_000)).position
      : await layer.groupSend(g, { type: 'room.message', n })
    epochIndex(g, position.epoch)
    acks.get(g).set(n, position)
    counts.acknowledged++
  } catch {
    counts.failedSends++ // its outcome is unknown: delivered or not, either is allowed
  } finally {
    inFlight--
  }
}
async function runAt (t0, events, action) {
  for (const e of events) {
    const wait = t0 + e.at - now()
    if (wait > 0) await sleep(wait)
    await action(e)
  }
}
function rejoin ({ r }) {
  const m = pick(members, r)
  const g = pick(m.groups, (r * CLIENTS) % 1)
  const old = m.subs.get(g)
  if (old.position === null) return
  old.leave()
  counts.rejoins++
  join(m, g, old.position)
}

const members = []
let layer = null
const killAll = () => {
  for (const s of servers) { s.stopping = true; s.child?.kill('SIGKILL') }
  redis?.kill('SIGKILL')
}
process.on('exit', () => { killAll(); rmSync(redisDir, { recursive: true, force: true }) })
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130))
const head = { seed: SEED, fault: FAULT, command: `node bench/fuzz.js ${process.argv.slice(2).join(' ')}` }
const hardStop = setTimeout(() => {
  console.log(JSON.stringify({ ...head, ok: false, error: 'hard timeout', ...counts, problems }))
  process.exit(1)
}, (SECONDS + 180) * 1000)
hardStop.unref()

let result
try {
  if (await ping()) throw new Error(`something answers on port ${REDIS_PORT} already: pick another --port`)
  await startRedis()
  await Promise.all(servers.map(startServer))
  layer = new RedisChannelLayer({ url: REDIS_URL, prefix: PREFIX, groups: policies, membershipLease: LEASE })
  for (let i = 0; i < CLIENTS; i++) members.push(member(i))
  await until('every client joined', () => members.every(m => m.groups.every(g => m.start.has(g))), 30_000, 50)

  const t0 = now()
  const injected = runAt(t0, faults, inject)
  injected.catch(() => {}) // awaited below: a fault that failed ends the run there
  const rejoined = runAt(t0, rejoins, rejoin)
  for (let n = 0; now() - t0 < SECONDS * 1000; await sleep(5)) {
    const due = Math.floor((now() - t0) * RATE / 1000)
    while (n < due && inFlight < 500) void publish(++n)
  }
  await Promise.all([injected, rejoined])
  await until('every send settled', () => inFlight === 0, 30_000, 50)
  await until('every client caught up', () => check().lost === 0, 30_000, 50).catch(() => {})
  await sleep(500) // a late copy shows too
  const presence = await presenceSettles((LEASE + 5) * 1000 + 10_000)
  const checked = check()
  const violations = checked.lost + checked.duplicated + checked.outOfOrder + checked.skipped + checked.misplaced + checked.reused +
    checked.unexpectedGaps + checked.notJoined + counts.crashes + counts.unhandled + counts.refused + counts.clientErrors + (presence.ok ? 0 : 1)
  result = {
    ...head,
    ok: violations === 0,
    violations,
    ...counts,
    ...checked,
    reconnects: members.reduce((sum, m) => sum + m.opens - 1, 0),
    presence,
    problems
  }
} catch (err) {
  result = { ...head, ok: false, error: String(err?.message ?? err), ...counts, problems }
} finally {
  for (const m of members) m.client.close()
  await layer?.close().catch(() => {})
  killAll()
  await Promise.all([...servers.map(s => s.child && exited(s.child)), redis && exited(redis)])
  rmSync(redisDir, { recursive: true, force: true })
}
console.log(JSON.stringify(result))
process.exitCode = result.ok ? 0 : 1
