#!/usr/bin/env node
// A deploy, counted: two server processes on one Redis behind the documented nginx configuration,
// restarted one at a time (SIGTERM, exit, start on the same port, wait until nginx serves it)
// while a publisher outside the deploy sends a numbered stream to a room with history, and N
// clients (fastify-channels/client) in the room. Reported: messages sent, delivered to each
// client, lost, duplicated, out of order, replayed frames the client dropped, gap() calls,
// reconnects and how long the clients were away.
//   npm run bench:rolling-restart                             200 clients, 100 messages/s (builds first)
//   node bench/rolling-restart.js --smoke                     20 clients, 50 messages/s (CI)
//   node bench/rolling-restart.js --clients=500 --rate=200
// Needs Redis at REDIS_URL and nginx. Results: bench/results/rolling-restart-latest.json (not
// written with --smoke). Method: bench/README.md.
import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { RedisChannelLayer } from 'fastify-channels'
import { ChannelsClient } from 'fastify-channels/client'
import { ipcClient, parseFlags, sleep, until } from './lib/common.js'
import { startNginx } from './lib/nginx.js'

const args = parseFlags(process.argv.slice(2), ['clients', 'rate', 'smoke'], import.meta.url)
const smoke = args.smoke === true
const CLIENTS = Number(args.clients ?? (smoke ? 20 : 200))
const RATE = Number(args.rate ?? (smoke ? 50 : 100))
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const PREFIX = `bench-rolling-${randomBytes(4).toString('hex')}`
const ROOM = 'room.deploy'
const groups = { 'room.*': { history: { size: 10_000, ttl: 300 } } }
const serverScript = fileURLToPath(new URL('./client-server.js', import.meta.url))
const now = () => performance.now()

function startServer (port = 0) {
  const child = fork(serverScript, [String(port), '0'], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, REDIS_URL, LAYER_PREFIX: PREFIX, GROUPS: JSON.stringify(groups), _TAPJS_PROCESSINFO_COVERAGE_: '0' }
  })
  const exited = new Promise(resolve => child.once('exit', code => resolve(code)))
  const request = ipcClient(child, 'client-server')
  return new Promise((resolve, reject) => {
    exited.then(code => reject(new Error(`client-server exited (${code}) before it was ready`)))
    const server = { child, exited, request, final: new Promise(resolve => {
      child.on('message', msg => { if (msg?.type === 'final') resolve(msg) })
      child.once('exit', () => resolve({ skippedFull: 0 })) // no last counts from a process that failed
    }) }
    child.on('message', msg => { if (msg?.type === 'ready') resolve({ ...server, port: msg.port, pid: msg.pid }) })
  })
}

/** One client, with what its handlers saw and what came over its sockets. */
function member (url) {
  const m = { received: [], wireMessages: 0, gaps: 0, opens: 0, retries: 0, away: [], leftAt: null }
  // ws, counting the `message` frames that arrive (the client drops those it had already).
  class Counted extends WebSocket {
    constructor (address, protocols) {
      super(address, protocols)
      this.on('message', data => { if (String(data).startsWith('{"op":"message"')) m.wireMessages++ })
    }
  }
  m.client = new ChannelsClient(url, { WebSocket: Counted })
  m.client.on('state', state => {
    if (state === 'open') {
      m.opens++
      if (m.leftAt !== null) m.away.push(now() - m.leftAt)
      m.leftAt = null
    } else if (state === 'reconnecting') {
      m.retries++
      m.leftAt ??= now()
    }
  })
  m.client.join(ROOM, { message (data) { m.received.push(data.n) }, gap () { m.gaps++ } })
  return m
}

function percentile (sorted, p) {
  return sorted.length === 0 ? null : Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))])
}

const servers = [await startServer(), await startServer()]
const nginx = await startNginx(servers.map(s => s.port)).catch(err => {
  for (const s of servers) s.child.kill('SIGTERM') // no server left behind when nginx cannot start
  throw err
})
const layer = new RedisChannelLayer({ url: REDIS_URL, prefix: PREFIX, groups })
const members = []
try {
  for (let i = 0; i < CLIENTS; i++) members.push(member(`ws://127.0.0.1:${nginx.port}/ws`))
  await until(`${CLIENTS} clients open`, () => members.every(m => m.client.state === 'open'), 60_000)
  // Answered after the join frame, so the join has taken effect (a connection's frames are handled in order).
  await Promise.all(members.map(m => m.client.call('echo', {}, { timeout: 30_000 })))

  let sent = 0
  let publishing = true
  const publisher = (async () => {
    const start = now()
    while (publishing && sent < RATE * 600) {
      const wait = start + sent * 1000 / RATE - now()
      if (wait > 0) await sleep(wait)
      const n = sent + 1
      await layer.groupSend(ROOM, { type: 'room.message', n })
      sent = n
    }
  })()

  const restarts = []
  let skippedFull = 0
  await sleep(1000)
  for (const [i, server] of servers.entries()) {
    const t0 = now()
    server.child.kill('SIGTERM')
    const code = await server.exited
    skippedFull += (await server.final).skippedFull
    const t1 = now()
    const next = await startServer(server.port)
    const t2 = now()
    await until('nginx serves the new process', async () => {
      const res = await fetch(`${nginx.url}/healthz`).catch(() => null)
      return res !== null && res.status === 200 && (await res.json()).pid === next.pid
    }, 30_000)
    restarts.push({ exitCode: code, sigtermToExitMs: Math.round(t1 - t0), startToListeningMs: Math.round(t2 - t1), listeningToServedMs: Math.round(now() - t2) })
    servers[i] = next
  }
  await sleep(1000)
  publishing = false
  await publisher
  await until('every client has every message', () => members.every(m => m.received.length >= sent), 30_000).catch(() => {})
  for (const server of servers) skippedFull += (await server.request('stats')).skippedFull

  const perClient = members.map(m => {
    const unique = new Set(m.received)
    return {
      delivered: m.received.length,
      lost: sent - unique.size,
      duplicated: m.received.length - unique.size,
      outOfOrder: m.received.filter((n, i) => i > 0 && n < m.received[i - 1]).length,
      replaysDropped: m.wireMessages - m.received.length
    }
  })
  const sum = key => perClient.reduce((total, c) => total + c[key], 0)
  const away = members.flatMap(m => m.away).sort((a, b) => a - b)
  const result = {
    clients: CLIENTS,
    ratePerSecond: RATE,
    sent,
    deliveredPerClient: { min: Math.min(...perClient.map(c => c.delivered)), max: Math.max(...perClient.map(c => c.delivered)) },
    lost: sum('lost'),
    duplicated: sum('duplicated'),
    outOfOrder: sum('outOfOrder'),
    replaysDroppedByClient: sum('replaysDropped'),
    gaps: members.reduce((total, m) => total + m.gaps, 0),
    skippedFull,
    reconnects: members.reduce((total, m) => total + m.opens - 1, 0),
    attempts: members.reduce((total, m) => total + m.retries, 0),
    awayMs: { p50: percentile(away, 0.5), p99: percentile(away, 0.99), max: percentile(away, 1) },
    restarts
  }
  console.log(`rolling restart, ${CLIENTS} clients, ${RATE} messages/s: sent ${sent}; delivered per client ${result.deliveredPerClient.min}–${result.deliveredPerClient.max}; ` +
    `lost ${result.lost}, duplicated ${result.duplicated}, out of order ${result.outOfOrder}, gap() ${result.gaps}; ` +
    `${skippedFull} live messages skipped for a full channel; ` +
    `${result.replaysDroppedByClient} replayed frames dropped by the clients as already seen`)
  console.log(`reconnects ${result.reconnects} (${result.attempts} attempts); away p50 ${result.awayMs.p50} ms, p99 ${result.awayMs.p99} ms, max ${result.awayMs.max} ms; ` +
    `restarts: ${restarts.map(r => `exit ${r.exitCode} ${r.sigtermToExitMs} ms after SIGTERM, listening ${r.startToListeningMs} ms after start, served by nginx ${r.listeningToServedMs} ms later`).join('; ')}`)
  const ok = result.lost === 0 && result.duplicated === 0 && result.outOfOrder === 0 && result.gaps === 0 && restarts.every(r => r.exitCode === 0)
  if (!smoke) {
    writeFileSync(fileURLToPath(new URL('./results/rolling-restart-latest.json', import.meta.url)), JSON.stringify({
      date: new Date().toISOString(),
      machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version },
      ...result
    }, null, 2) + '\n')
  }
  console.log(ok ? 'rolling restart bench ok' : 'rolling restart bench FAILED')
  process.exitCode = ok ? 0 : 1
} finally {
  for (const m of members) m.client.close()
  await layer.flush().catch(() => {})
  await layer.close()
  await nginx.stop()
  for (const s of servers) if (s.child.exitCode === null) s.child.kill('SIGTERM')
}
