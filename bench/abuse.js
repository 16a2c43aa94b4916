#!/usr/bin/env node
// What abuse costs the other clients: a witness client (fastify-channels/client) calls `echo` 200
// times a second and its round trips are measured alone, then while another client floods frames
// (the plugin's `rateLimit` on), while one never reads, and while an address floods handshakes
// (@fastify/rate-limit on the route), then alone again — all in one run against one server.
//   npm run bench:abuse                           10 s per phase (builds first)
//   node bench/abuse.js --smoke                    1 s per phase: checks the harness (CI)
//   node bench/abuse.js --seconds=30
// Results: bench/results/abuse-latest.json (not written with --smoke). Method: bench/README.md.
import { fork } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { ChannelsClient } from 'fastify-channels/client'
import { ipcClient, parseFlags, sleep } from './lib/common.js'

const args = parseFlags(process.argv.slice(2), ['seconds', 'smoke'], import.meta.url)
const smoke = args.smoke === true
const SECONDS = Number(args.seconds ?? (smoke ? 1 : 10))
const CALL_EVERY_MS = 5
// Per connection: the witness's 200 calls a second are well under it; a flood is not.
const FRAME_LIMIT = '1000/1000'
// Per address and minute: the frame flooder's reconnects (5 a second at most) stay under it. With
// --smoke, under the handshake flooder's first 20 at once, so it meets the limit however slow the machine.
const HANDSHAKE_LIMIT = String(smoke ? 10 : Math.max(120, 6 * SECONDS))
const here = path => fileURLToPath(new URL(path, import.meta.url))

function forkReady (script, argv, env = {}) {
  const child = fork(here(script), argv, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...process.env, ...env } })
  const request = ipcClient(child, script)
  return new Promise((resolve, reject) => {
    child.once('exit', code => reject(new Error(`${script} exited (${code}) before it was ready`)))
    child.on('message', msg => { if (msg?.type === 'ready') resolve({ child, request, ...msg }) })
  })
}

function percentile (sorted, p) {
  return sorted.length === 0 ? null : Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] * 1000) / 1000
}

/** The witness's round trips for `SECONDS`, one call every CALL_EVERY_MS (or as soon as the last returned). */
async function measure (client) {
  const samples = []
  let failures = 0
  const end = performance.now() + SECONDS * 1000
  for (let i = 0; performance.now() < end; i++) {
    const start = performance.now()
    try {
      await client.call('echo', { i }, { timeout: 5000 })
      samples.push(performance.now() - start)
    } catch {
      failures++
    }
    const wait = start + CALL_EVERY_MS - performance.now()
    if (wait > 0) await sleep(wait)
  }
  samples.sort((a, b) => a - b)
  return { calls: samples.length, failures, p50Ms: percentile(samples, 0.5), p99Ms: percentile(samples, 0.99), maxMs: percentile(samples, 1) }
}

const server = await forkReady('./client-server.js', ['0', '0'], { FRAME_LIMIT, HANDSHAKE_LIMIT, _TAPJS_PROCESSINFO_COVERAGE_: '0' })
const url = `ws://127.0.0.1:${server.port}/ws`
const abusers = []
try {
  const witness = new ChannelsClient(url, { WebSocket })
  for (let i = 0; i < 200 && witness.state !== 'open'; i++) await sleep(25)
  await measure(witness) // warm-up, not reported (one phase's length)

  const phases = []
  const phase = async (name, abuse) => {
    let abuser
    if (abuse !== undefined) {
      abuser = await forkReady('./abuser.js', [abuse.kind, url, abuse.from])
      abusers.push(abuser)
      await sleep(200) // under way before the witness is measured
    }
    const before = await server.request('stats')
    const witnessed = await measure(witness)
    const after = await server.request('stats')
    const abused = abuser === undefined ? undefined : (await abuser.request('stop')).counts
    const row = { phase: name, witness: witnessed, abuser: abused, refusedHandshakes: after.refusedHandshakes - before.refusedHandshakes }
    phases.push(row)
    const detail = abused === undefined
      ? ''
      : `; abuser: ${abused.sockets} sockets, ${abused.frames} frames, handshakes ${JSON.stringify(abused.statuses)}, closed ${JSON.stringify(abused.closes)}`
    console.log(`${name.padEnd(26)} witness p50 ${witnessed.p50Ms} ms, p99 ${witnessed.p99Ms} ms, max ${witnessed.maxMs} ms over ${witnessed.calls} calls, ${witnessed.failures} failed${detail}`)
  }
  await phase('alone')
  await phase('frame flood (rateLimit on)', { kind: 'frames', from: '127.0.0.2' })
  await phase('a client never reads', { kind: 'never-reads', from: '127.0.0.3' })
  await phase('handshake flood', { kind: 'handshakes', from: '127.0.0.4' })
  await phase('alone again')
  witness.close()

  const alone = phases.filter(p => p.abuser === undefined).map(p => p.witness)
  const baseline = { p50Ms: Math.max(...alone.map(w => w.p50Ms)), p99Ms: Math.max(...alone.map(w => w.p99Ms)) }
  for (const p of phases) {
    p.p50Ratio = Math.round(p.witness.p50Ms / baseline.p50Ms * 100) / 100
    p.p99Ratio = Math.round(p.witness.p99Ms / baseline.p99Ms * 100) / 100
  }
  console.log(`witness p99 under abuse ÷ alone (the higher of the two alone phases): ${phases.filter(p => p.abuser !== undefined).map(p => `${p.phase} ${p.p99Ratio}×`).join(', ')}`)
  const ok = phases.every(p => p.witness.failures === 0 && p.witness.calls > 0)
  if (!smoke) {
    writeFileSync(here('./results/abuse-latest.json'), JSON.stringify({
      date: new Date().toISOString(),
      machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version },
      secondsPerPhase: SECONDS, callEveryMs: CALL_EVERY_MS, frameLimit: FRAME_LIMIT, handshakeLimitPerMinute: Number(HANDSHAKE_LIMIT), phases
    }, null, 2) + '\n')
  }
  console.log(ok ? 'abuse bench ok' : 'abuse bench FAILED: the witness was not answered')
  process.exitCode = ok ? 0 : 1
} finally {
  for (const p of [server, ...abusers]) if (p.child.connected) p.child.kill('SIGTERM')
}
