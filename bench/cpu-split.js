// Where a delivery's CPU goes: user (JavaScript, Node, libuv) against system (the kernel's TCP
// write path), and how much garbage it leaves (young-generation collections), for the floor and
// for this package side by side, in interleaved rounds.
//
//   node bench/cpu-split.js [--targets=ws-memory,channels-memory,channels-memory-shared]
//     [--connections=10000] [--groups=100] [--active=<groups>] [--join=interleaved|grouped]
//     [--rate=300] [--seconds=10] [--rounds=3]
//     [--alt=<path to another build's dist/index.js>]   (then e.g. --targets=channels-memory,channels-memory-alt)
//     [--perf=<path prefix>]   (a `perf record -g` of each server during its measured window)
//     [--syscalls]   (each server's write, read and epoll_pwait calls per delivery, by `perf stat`)
//
// The clients are plain WebSocket clients of `/ws/<group>`: the `ws` and `channels` targets.
// Each target's server runs alone on CPU 0 (taskset, when there is one) and one client process
// holding every connection on CPU 1. After 3 s of warm-up, `rate` group messages a second go
// round-robin over the groups for `seconds`; the server's process.cpuUsage() over that window,
// divided by the deliveries, gives user and system µs per delivery. Reported: each target's
// median over the rounds. `npm run build` first (the channels targets import the built package).
// `--perf=/tmp/split` profiles the same load: each server runs with `node --perf-basic-prof`, and
// `perf record -g` is attached once its warm-up is over (the upgrades are not in it), for the
// measured window; `perf report -i /tmp/split-<target>-<round>.data` reads it (README ›
// Performance, *Fewer objects read per delivery*).
// `--syscalls` counts the server's system calls in the same window instead (`perf stat` on the
// kernel's syscall tracepoints): whether a target writes each delivery in one call, as the floor
// does, or reads and polls more often.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { tmpdir } from 'node:os'
import { PerformanceObserver, constants } from 'node:perf_hooks'
import { countingClients, exited, groupName, hasTaskset, makePayloadFactory, median, parseFlags, sleep, spawnNode, startNamedTarget } from './lib/common.js'

const self = fileURLToPath(import.meta.url)
const [role] = process.argv.slice(2)

if (role === 'server') await server(...process.argv.slice(3))
else if (role === 'clients') await clients(...process.argv.slice(3).map(Number))
else await main()

async function main () {
  const opts = parseFlags(process.argv.slice(2), ['targets', 'connections', 'groups', 'active', 'join', 'rate', 'seconds', 'rounds', 'alt', 'perf', 'syscalls'], import.meta.url)
  const targets = (opts.targets ?? 'ws-memory,channels-memory,channels-memory-shared').split(',')
  if (opts.alt !== undefined) process.env.BENCH_ALT_ENTRY = opts.alt
  const connections = Number(opts.connections ?? 10000)
  const groups = Number(opts.groups ?? 100)
  // Messages go to the first `active` groups only: the other connections are held, idle.
  const active = Number(opts.active ?? groups)
  // `interleaved`: connection k joins group k mod groups, so a group's members connect at different
  // times, as in an app; `grouped`: a group's members connect one after another.
  const grouped = (opts.join ?? 'interleaved') === 'grouped'
  const rate = Number(opts.rate ?? 300)
  const seconds = Number(opts.seconds ?? 10)
  const rounds = Number(opts.rounds ?? 3)
  const pin = hasTaskset()
  const results = new Map(targets.map(t => [t, []]))
  for (let round = 1; round <= rounds; round++) {
    for (const target of targets) {
      const perf = opts.perf === undefined ? undefined : `${opts.perf}-${target}-${round}.data`
      const row = await measure(target, { connections, groups, active, grouped, rate, seconds, pin, perf, syscalls: opts.syscalls === true })
      results.get(target).push(row)
      console.log(`round ${round} ${target}: user ${row.user.toFixed(2)} + sys ${row.sys.toFixed(2)} = ${(row.user + row.sys).toFixed(2)} µs/delivery, ${row.scavenges} scavenges and ${row.majors} other collections (pauses ${(row.gcMs * 1000 / row.deliveries).toFixed(2)} µs/delivery, the longest ${row.gcMaxMs.toFixed(1)} ms), ${(row.received / row.expected * 100).toFixed(1)}% received`)
      if (row.syscalls !== undefined) console.log(`  system calls per delivery: ${Object.entries(row.syscalls).map(([name, n]) => `${name} ${n.toFixed(4)}`).join(', ')}`)
    }
  }
  console.log(`\nmedian of ${rounds} rounds, ${connections} connections, ${groups} groups (${active} receiving, members joined ${grouped ? 'grouped' : 'interleaved'}), ${rate} messages/s (${rate * connections / groups} deliveries/s) for ${seconds} s:`)
  console.log('| target | user µs/delivery | system µs/delivery | total | young-generation GCs per 100,000 deliveries |')
  console.log('|---|--:|--:|--:|--:|')
  for (const [target, rows] of results) {
    const med = key => median(rows.map(r => key(r)))
    console.log(`| ${target} | ${med(r => r.user).toFixed(2)} | ${med(r => r.sys).toFixed(2)} | ${med(r => r.user + r.sys).toFixed(2)} | ${med(r => r.scavenges / r.deliveries * 1e5).toFixed(1)} |`)
  }
}

async function measure (target, { connections, groups, active, grouped, rate, seconds, pin, perf, syscalls }) {
  const stdio = ['ignore', 'pipe', 'inherit', 'ipc']
  const run = (cpu, args, flags = [], cwd = undefined) => spawnNode([...flags, self, ...args], { pin, cpu, stdio, cwd })
  // Profiled, the server runs with --perf-basic-prof, with which V8 also writes an isolate log to
  // the working directory: the temporary one, not here.
  const profiled = perf !== undefined
  const srv = run(0, ['server', target, String(groups)], profiled ? ['--perf-basic-prof'] : [], profiled ? tmpdir() : undefined)
  const port = await new Promise((resolve, reject) => { srv.once('message', m => resolve(m.port)); srv.once('exit', code => reject(new Error(`${target} server exited (${code})`))) })
  const cli = run(1, ['clients', String(port), String(connections), String(groups), grouped ? '1' : '0'])
  await new Promise((resolve, reject) => {
    cli.once('message', resolve)
    cli.once('exit', code => { srv.kill(); reject(new Error(`clients of ${target} exited (${code}) before all were open`)) })
  })
  await sleep(1000)
  srv.send({ rate, seconds, active })
  // The server's warm-up is 3 s; a recording or count ends before its window does.
  const watched = Math.max(1, seconds - 1)
  if (profiled) {
    setTimeout(() => spawn('perf', ['record', '-F', '2999', '-g', '-p', String(srv.pid), '-o', perf, '--', 'sleep', String(watched)], { stdio: 'ignore' }), 3500)
  }
  const [row, counted] = await Promise.all([
    new Promise(resolve => srv.once('message', resolve)),
    syscalls ? countSyscalls(srv.pid, watched, 3500) : undefined
  ])
  // Offered deliveries in the counted seconds: the counts are per delivery at the offered rate.
  if (counted !== undefined) row.syscalls = perDelivery(counted, rate * connections / groups * watched)
  await sleep(500)
  cli.send('count')
  const received = await new Promise(resolve => cli.once('message', resolve))
  cli.kill()
  srv.kill()
  await Promise.all([cli, srv].map(exited))
  return { ...row, received, expected: row.total * connections / groups }
}

/** `perf stat` of the process' system calls for `seconds`, from `delay` ms on: count by name. */
async function countSyscalls (pid, seconds, delay) {
  const names = ['write', 'writev', 'read', 'epoll_pwait']
  await sleep(delay)
  const events = names.map(name => `syscalls:sys_enter_${name}`).join(',')
  const stat = spawn('perf', ['stat', '-x', ',', '-e', events, '-p', String(pid), '--', 'sleep', String(seconds)], { stdio: ['ignore', 'ignore', 'pipe'] })
  let out = ''
  stat.stderr.on('data', chunk => { out += chunk })
  await exited(stat)
  if (stat.exitCode !== 0) throw new Error(`perf stat exited (${stat.exitCode}): ${out.trim()}`)
  const counts = {}
  for (const line of out.split('\n')) {
    const [count, , event] = line.split(',')
    const name = event?.replace('syscalls:sys_enter_', '')
    if (names.includes(name)) counts[name] = Number(count)
  }
  return counts
}

function perDelivery (counts, deliveries) {
  return Object.fromEntries(Object.entries(counts).map(([name, n]) => [name, n / deliveries]))
}

async function server (target, groups) {
  const s = await startNamedTarget(target, { prefix: `split${process.pid}` })
  let scavenges = 0
  let majors = 0 // any other collection: mark-compact, incremental marking's finalization, …
  let gcMs = 0 // time in collections' pauses
  let gcMaxMs = 0 // the longest pause
  let counting = false
  new PerformanceObserver(list => {
    for (const e of list.getEntries()) {
      if (!counting) continue
      if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) scavenges++
      else majors++
      gcMs += e.duration
      if (e.duration > gcMaxMs) gcMaxMs = e.duration
    }
  }).observe({ entryTypes: ['gc'] })
  process.send({ port: s.port })
  process.once('message', ({ rate, seconds, active }) => {
    const payload = makePayloadFactory(128)
    const perTick = rate / 100
    const warm = 300
    let seq = 0
    let ticks = 0
    let from = 0
    let start
    const timer = setInterval(() => {
      for (let i = 0; i < perTick; i++) {
        seq++
        s.publish(groupName(seq % active), payload(seq, seq % active, performance.now()))
      }
      if (++ticks === warm) {
        start = process.cpuUsage()
        from = seq
        counting = true
      }
      if (ticks < warm + seconds * 100) return
      clearInterval(timer)
      const used = process.cpuUsage(start)
      const deliveries = (seq - from) * (s.connections() / groups)
      process.send({ user: used.user / deliveries, sys: used.system / deliveries, scavenges, majors, gcMs, gcMaxMs, deliveries, total: seq })
    }, 10)
  })
}

async function clients (port, n, groups, grouped) {
  await countingClients(port, n, i => grouped ? Math.floor(i * groups / n) : i % groups)
}
