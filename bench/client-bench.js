#!/usr/bin/env node
// fastify-channels/client, measured: its bundle size, the round trip of `call()` against a raw
// `ws` echo in the same run, and a reconnect storm — N clients whose server restarts: how long
// until all are back, and the peak rate of connection attempts the server and the clients saw.
//   npm run bench:client                       1,000 clients, 5,000 calls
//   node bench/client-bench.js --smoke         50 clients, 200 calls: checks the harness (CI)
//   node bench/client-bench.js --clients=2000 --calls=20000
// Results: bench/results/client-latest.json (not written with --smoke). Method: bench/README.md.
import { fork } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { ChannelsClient } from 'fastify-channels/client'
import { ipcClient, parseFlags, sleep, until } from './lib/common.js'
import { clientSize } from './client-size.js'

const args = parseFlags(process.argv.slice(2), ['clients', 'calls', 'smoke'], import.meta.url)
const smoke = args.smoke === true
const CLIENTS = Number(args.clients ?? (smoke ? 50 : 1000))
const CALLS = Number(args.calls ?? (smoke ? 200 : 5000))
const serverScript = fileURLToPath(new URL('./client-server.js', import.meta.url))
const now = () => performance.timeOrigin + performance.now()

function startServer (port = 0, echoPort = 0) {
  const child = fork(serverScript, [String(port), String(echoPort)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const request = ipcClient(child, 'client-server')
  return new Promise((resolve, reject) => {
    child.once('exit', code => reject(new Error(`client-server exited (${code}) before it was ready`)))
    child.on('message', msg => { if (msg?.type === 'ready') resolve({ child, request, ...msg, readyAt: now() }) })
  })
}

function percentile (sorted, p) {
  return sorted.length === 0 ? null : Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] * 1000) / 1000
}

function summary (samples) {
  const sorted = [...samples].sort((a, b) => a - b)
  return { p50Ms: percentile(sorted, 0.5), p99Ms: percentile(sorted, 0.99), meanMs: Math.round(sorted.reduce((a, b) => a + b, 0) / sorted.length * 1000) / 1000 }
}

/** Sequential round trips: `once()` resolves when the answer is back. */
async function roundTrips (count, once) {
  for (let i = 0; i < Math.min(200, count); i++) await once(i) // warm-up
  const samples = []
  for (let i = 0; i < count; i++) {
    const start = performance.now()
    await once(i)
    samples.push(performance.now() - start)
  }
  return samples
}

async function measureRtt (server) {
  const client = new ChannelsClient(`ws://127.0.0.1:${server.port}/ws`, { WebSocket })
  await until('client open', () => client.state === 'open', 10_000, 5)
  const raw = new WebSocket(`ws://127.0.0.1:${server.echoPort}`, { perMessageDeflate: false })
  await new Promise((resolve, reject) => { raw.once('open', resolve); raw.once('error', reject) })
  let wake
  raw.on('message', () => wake())
  const rawOnce = i => new Promise(resolve => { wake = resolve; raw.send(JSON.stringify({ op: 'call', id: i, action: 'echo', args: { i } })) })
  const callOnce = i => client.call('echo', { i })
  // Two interleaved rounds each, so a change in the machine's load hits both alike.
  const rawSamples = []
  const callSamples = []
  for (let round = 0; round < 2; round++) {
    rawSamples.push(...await roundTrips(CALLS / 2, rawOnce))
    callSamples.push(...await roundTrips(CALLS / 2, callOnce))
  }
  client.close()
  raw.close()
  const call = summary(callSamples)
  const floor = summary(rawSamples)
  return { calls: CALLS, call, rawWs: floor, p50Ratio: Math.round(call.p50Ms / floor.p50Ms * 100) / 100 }
}

async function measureStorm (server) {
  const attempts = []
  const clients = []
  const rejoined = new Set()
  class Counted extends WebSocket {
    constructor (url, protocols) {
      attempts.push(now())
      super(url, protocols)
    }
  }
  let joined = 0
  for (let i = 0; i < CLIENTS; i++) {
    const client = new ChannelsClient(`ws://127.0.0.1:${server.port}/ws`, { WebSocket: Counted })
    // A group without history: every re-join says it could not recover, which marks the client back.
    client.join('storm', { gap () { rejoined.add(client) } }).ready.then(() => { joined++ }, () => {})
    clients.push(client)
  }
  // Joined, not only open: a join still in flight when the server stops is a first join when it
  // is answered after the restart, and a first join has nothing to recover (no gap()).
  // Every wait is bounded, under CI's limit with --smoke, and each step is logged (stderr), so a
  // storm that does not come back says where it stopped.
  const wait = smoke ? 20_000 : 300_000
  await until(`${CLIENTS} clients joined`, () => joined === CLIENTS, wait, 5)
  console.error(`storm: ${CLIENTS} clients joined; stopping the server`)
  const downAt = now()
  // Listening before asking: on a loaded machine the exit can be handled before the reply is.
  const exited = new Promise(resolve => server.child.once('exit', resolve))
  await server.request('stop', {}, wait)
  await exited
  console.error('storm: the server has exited; starting it again')
  const next = await startServer(server.port, server.echoPort)
  console.error('storm: the server is up again')
  await until(() => `${CLIENTS} clients back (${rejoined.size} re-joined, ${clients.filter(c => c.state === 'open').length} open)`,
    () => rejoined.size === CLIENTS && clients.every(c => c.state === 'open'), smoke ? 45_000 : wait, 5)
  const backAt = now()
  await sleep(500)
  const stats = await next.request('stats')
  for (const client of clients) client.close()
  const after = attempts.filter(at => at >= downAt)
  return {
    clients: CLIENTS,
    serverDownMs: Math.round(next.readyAt - downAt),
    allBackAfterRestartMs: Math.round(backAt - next.readyAt),
    allBackAfterDropMs: Math.round(backAt - downAt),
    connectionsAtServer: stats.connections,
    peakHandshakesPerSecAtServer: peakPerSecond(stats.handshakes),
    peakAttemptsPerSecAtClients: peakPerSecond(bucketed(after)),
    attemptsPerClient: Math.round(after.length / CLIENTS * 100) / 100,
    next
  }
}

function bucketed (times) {
  const buckets = new Map()
  for (const at of times) {
    const bucket = Math.floor(at / 100)
    buckets.set(bucket, (buckets.get(bucket) ?? 0) + 1)
  }
  return [...buckets]
}

/** The most events in any 1 s window, from 100 ms buckets. */
function peakPerSecond (buckets) {
  const counts = new Map(buckets)
  let peak = 0
  for (const [bucket] of buckets) {
    let sum = 0
    for (let b = bucket; b < bucket + 10; b++) sum += counts.get(b) ?? 0
    peak = Math.max(peak, sum)
  }
  return peak
}

const size = await clientSize()
console.log(`bundle: ${size.minified} B minified, ${size.gzipped} B gzipped (budget ${size.budget})`)
const server = await startServer()
let next
try {
  const rtt = await measureRtt(server)
  console.log(`call() round trip over ${rtt.calls} sequential calls: p50 ${rtt.call.p50Ms} ms, p99 ${rtt.call.p99Ms} ms; ` +
    `raw ws echo: p50 ${rtt.rawWs.p50Ms} ms, p99 ${rtt.rawWs.p99Ms} ms (${rtt.p50Ratio}× at p50)`)
  const storm = await measureStorm(server)
  next = storm.next
  delete storm.next
  console.log(`reconnect storm, ${storm.clients} clients: server down ${storm.serverDownMs} ms; all back ${storm.allBackAfterRestartMs} ms after it was up ` +
    `(${storm.allBackAfterDropMs} ms after the drop); peak ${storm.peakHandshakesPerSecAtServer} handshakes/s at the server, ` +
    `${storm.peakAttemptsPerSecAtClients} attempts/s from the clients; ${storm.attemptsPerClient} attempts per client; ${storm.connectionsAtServer} connections at the end`)
  const ok = size.gzipped <= size.budget && storm.connectionsAtServer === CLIENTS
  const result = {
    date: new Date().toISOString(),
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version },
    size, rtt, storm
  }
  if (!smoke) writeFileSync(fileURLToPath(new URL('./results/client-latest.json', import.meta.url)), JSON.stringify(result, null, 2) + '\n')
  console.log(ok ? 'client bench ok' : 'client bench FAILED')
  process.exitCode = ok ? 0 : 1
} finally {
  for (const s of [server, next]) if (s?.child.connected === true) s.child.kill('SIGTERM')
}
