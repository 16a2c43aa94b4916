#!/usr/bin/env node
// What keeping idle connections alive costs: the server's CPU for each ping and its pong, with
// this package's heartbeat against raw `ws` pinging the same connections on the same schedule (a
// slice of them every 250 ms, each once per interval, one that did not answer the last ping
// terminated), in interleaved rounds. The server's CPU is read every second, and the median
// second kept, as bench/run.js reads idle CPU: a collection V8 runs now and then (its memory
// reducer, some seconds after the connections were made) is not what a ping costs. The interval
// is 3 s by default, for a few thousand pings a second; a ping costs more at 30 s (each tick
// then wakes the process for fewer of them), so compare targets at one interval.
//   node bench/heartbeat.js                                  10,000 connections, 3 s, 3 rounds of 15 s
//   node bench/heartbeat.js --connections=5000 --interval=30000 --seconds=60 --rounds=5
//   node bench/heartbeat.js --interval=30000 --settle=120000   measure 2 min after the connections opened
//   node bench/heartbeat.js --smoke                          200 connections, 1 s, one round of 3 s: checks the harness (CI)
// The server runs on CPU 0 and the clients (plain `ws` clients, which answer pings) on CPU 1, with
// taskset where there is one. `npm run build` first: this package's server imports the built package.
import { fileURLToPath } from 'node:url'
import { exited, hasTaskset, median, openClients, parseFlags, sleep, spawnNode } from './lib/common.js'

const self = fileURLToPath(import.meta.url)
const [role, ...rest] = process.argv.slice(2)
// The heartbeat's tick (lib/connection/heartbeat.ts): a slice of the connections every 250 ms.
const TICK_MS = 250

if (role === 'server') await server(rest[0], Number(rest[1]))
else if (role === 'clients') await clients(Number(rest[0]), Number(rest[1]))
else await main()

async function main () {
  const opts = parseFlags(process.argv.slice(2), ['connections', 'interval', 'seconds', 'rounds', 'settle', 'smoke'], import.meta.url)
  const smoke = opts.smoke === true
  const connections = Number(opts.connections ?? (smoke ? 200 : 10000))
  const interval = Number(opts.interval ?? (smoke ? 1000 : 3000))
  const seconds = Number(opts.seconds ?? (smoke ? 3 : 15))
  const rounds = Number(opts.rounds ?? (smoke ? 1 : 3))
  // From the last connection open to the first second read: a whole interval at least, so that
  // every connection is on the schedule. V8's memory reducer runs major collections for a while
  // after the connections were made; a longer wait leaves them out.
  const settle = Number(opts.settle ?? interval + 1000)
  const pin = hasTaskset()
  const run = (cpu, args) => spawnNode([self, ...args], { pin, cpu, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  // Pings due in one second.
  const pings = connections * 1000 / interval
  const results = { ws: [], channels: [] }
  for (let round = 1; round <= rounds; round++) {
    for (const target of Object.keys(results)) {
      const srv = run(0, ['server', target, String(interval)])
      const port = await new Promise((resolve, reject) => { srv.once('message', m => resolve(m.port)); srv.once('exit', code => reject(new Error(`${target} server exited (${code})`))) })
      const cli = run(1, ['clients', String(port), String(connections)])
      await new Promise((resolve, reject) => { cli.once('message', resolve); cli.once('exit', code => reject(new Error(`clients exited (${code})`))) })
      await sleep(settle)
      srv.send('start')
      await sleep(seconds * 1000)
      srv.send('stop')
      const usage = await new Promise(resolve => srv.once('message', resolve))
      cli.send('count')
      const open = await new Promise(resolve => cli.once('message', resolve))
      for (const p of [cli, srv]) p.kill()
      await Promise.all([cli, srv].map(exited))
      if (open !== connections) throw new Error(`${target}: ${connections - open} connections closed during the round`)
      if (usage.user === undefined) throw new Error(`${target}: no one-second window was read (--seconds=${seconds}: give it 2 or more)`)
      const row = { user: usage.user / pings, sys: usage.system / pings, pongs: usage.pongs / pings }
      results[target].push(row)
      console.log(`round ${round} ${target}: user ${row.user.toFixed(1)} + sys ${row.sys.toFixed(1)} = ${(row.user + row.sys).toFixed(1)} µs per ping and pong (${(row.pongs * 100).toFixed(0)}% of the pings due in a second answered)`)
    }
  }
  console.log(`\nmedian of ${rounds} rounds, ${connections} idle connections, each pinged every ${interval} ms, the median second of ${seconds}:`)
  console.log('| target | user µs | system µs | total µs per ping and pong | × ws | ms of CPU a second per 10,000 connections |')
  console.log('|---|--:|--:|--:|--:|--:|')
  const totals = Object.fromEntries(Object.entries(results).map(([target, rows]) => [target, median(rows.map(r => r.user + r.sys))]))
  for (const [target, rows] of Object.entries(results)) {
    const total = totals[target]
    console.log(`| ${target} | ${median(rows.map(r => r.user)).toFixed(1)} | ${median(rows.map(r => r.sys)).toFixed(1)} | ${total.toFixed(1)} | ${(total / totals.ws).toFixed(2)} | ${(total * 10000 / interval).toFixed(1)} |`)
  }
}

async function server (target, interval) {
  let port
  let pongs = 0
  if (target === 'ws') {
    const { WebSocketServer } = await import('ws')
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false })
    await new Promise(resolve => wss.once('listening', resolve))
    port = wss.address().port
    const slices = Math.max(1, Math.min(120, Math.floor(interval / TICK_MS)))
    const buckets = Array.from({ length: slices }, () => new Set())
    let next = 0
    wss.on('connection', ws => {
      const bucket = buckets[next++ % slices]
      bucket.add(ws)
      ws.on('pong', () => { ws.awaitingPong = false; pongs++ })
      ws.on('close', () => bucket.delete(ws))
    })
    let tick = 0
    setInterval(() => {
      for (const ws of buckets[tick]) {
        if (ws.awaitingPong) ws.terminate()
        else { ws.awaitingPong = true; ws.ping() }
      }
      tick = (tick + 1) % slices
    }, interval / slices)
  } else {
    const { default: Fastify } = await import('fastify')
    const { default: fastifyChannels, InMemoryChannelLayer, JsonWebsocketConsumer } = await import('fastify-channels')
    const app = Fastify()
    await app.register(fastifyChannels, { layer: new InMemoryChannelLayer(), heartbeatInterval: interval })
    // The pongs, counted on the socket: one listener more than the package has on its own.
    app.addHook('onReady', async () => { app.websocketServer.on('connection', ws => ws.on('pong', () => { pongs++ })) })
    class Idle extends JsonWebsocketConsumer {}
    app.get('/ws', { websocket: true }, Idle.asHandler())
    await app.listen({ host: '127.0.0.1', port: 0 })
    port = app.server.address().port
  }
  // One-second windows: CPU in µs and pongs, from 'start' to 'stop'.
  const windows = []
  let sampler
  process.on('message', m => {
    if (m === 'start') {
      let last = process.cpuUsage()
      pongs = 0
      sampler = setInterval(() => {
        const now = process.cpuUsage()
        windows.push({ user: now.user - last.user, system: now.system - last.system, pongs })
        last = now
        pongs = 0
      }, 1000)
      return
    }
    clearInterval(sampler)
    const mid = key => median(windows.map(w => w[key]))
    process.send({ user: mid('user'), system: mid('system'), pongs: mid('pongs') })
  })
  process.send({ port })
}

async function clients (port, n) {
  let open = 0
  await openClients(n, () => `ws://127.0.0.1:${port}/ws`, ws => {
    ws.once('open', () => { open++ })
    ws.once('close', () => { open-- })
  })
  process.send('open')
  process.on('message', () => process.send(open))
}
