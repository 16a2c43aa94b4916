// A delivery's cost in instructions, not seconds: the server runs under valgrind's callgrind,
// which counts every instruction the process executes in user space, whatever the host is doing.
// Time-based figures (`npm run bench`, `cpu-split.js`) move with the machine's speed; this count
// is the same on a slow host and a fast one, so two builds or two targets compare in any state.
//
//   node bench/instructions.js [--targets=ws-memory,channels-memory]
//     [--connections=2000] [--groups=20] [--rate=50] [--payload=128] [--warm=2000] [--messages=1000] [--rounds=1]
//     [--alt=<path to another build's dist/index.js>]   (then e.g. --targets=channels-memory,channels-memory-alt)
//     [--keep=<dir>]   (keeps callgrind's dumps, <dir>/<target>/callgrind.<pid>.<n>: 1 idle, 2 busy;
//                       `bench/instructions-report.js` lists where the instructions went)
//
// Each target's server runs alone under `valgrind --tool=callgrind` (on CPU 0 when taskset works),
// with one client process holding every connection on CPU 1, outside valgrind. The server
// publishes `warm` group messages round-robin over the groups, at four times the rate, so that the
// JIT compiles the hot path: after 400, functions that run once per group message (a fan-out)
// were still being compiled in the window, some 500 instructions per delivery of compiling. Then
// a full collection (below), and `warm` / 2 messages more: the collection deoptimizes the compiled
// code that held objects it freed (Node's socket writes among them), and without them that code
// was compiled again in the window, 300–1,000 instructions per delivery that differed from one
// target to the next more than the targets did. Then callgrind's counters are zeroed
// (`callgrind_control -z`) and dumped after a window with nothing to deliver, then zeroed again
// while the server publishes `messages` more at `rate` a second, and dumped once the clients have
// received every one. The busy window's total, less what the idle window ran in as much time,
// divided by the deliveries, is the server's instructions per delivery: the JavaScript, V8's
// compiled code and collections, Node and libuv, and the publish itself (publishes enter the
// server, as in `npm run bench`).
//
// What it leaves out or holds fixed, so that a count depends on the code only:
// - the kernel's part, the socket writes: valgrind sees user space only (`cpu-split.js` gives the
//   system time apart; every target writes once per delivery);
// - heartbeats, turned off: the floor has none, and a ping costs per second, not per delivery;
// - V8's compiling on a helper thread (`--no-concurrent-recompilation`): under valgrind that thread
//   lags far behind, and its work would land in the measured window instead of the warm-up;
// - the young generation's growth: V8 sizes it by how fast the process allocates, and under
//   valgrind one process' grew and another's did not, a collection per 1,000 deliveries against
//   none in 10,000. It is set to 16 MiB a semi-space (`--min-semi-space-size=16`), the size a
//   server at this load grows to (about one scavenge per 14,000 deliveries in `cpu-split.js`),
//   and the window holds 100,000 deliveries, so that collections are counted as they fall. A full
//   collection runs between the warm-up and the windows (`--expose-gc`): the old generation the
//   connections' set-up filled is collected then, not as a major collection of 90 million
//   instructions in one window; and V8's memory reducer is off (`--no-memory-reducer`), which
//   collects again when a process allocates little, as in the idle window.
// The rate is low on purpose: under valgrind a process runs some fifty times slower, and an
// overloaded server would batch its writes, which the real one at this load does not.
// `--keep` runs the server with `--perf-basic-prof` too, so that `bench/instructions-report.js`
// can name the compiled JavaScript functions in the dump.
// Needs valgrind (`apt-get install valgrind`) and `npm run build` first.
import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve as resolvePath } from 'node:path'
import { fileURLToPath } from 'node:url'
import { countingClients, exited, groupName, hasTaskset, makePayloadFactory, median, parseFlags, sleep, startNamedTarget } from './lib/common.js'

const self = fileURLToPath(import.meta.url)
const [role] = process.argv.slice(2)

if (role === 'server') await server(...process.argv.slice(3))
else if (role === 'clients') await clients(...process.argv.slice(3).map(Number))
else await main()

async function main () {
  const opts = parseFlags(process.argv.slice(2), ['targets', 'connections', 'groups', 'rate', 'payload', 'warm', 'messages', 'rounds', 'alt', 'keep'], import.meta.url)
  if (spawnSync('valgrind', ['--version'], { stdio: 'ignore' }).status !== 0) {
    process.stderr.write('valgrind is not installed (apt-get install valgrind)\n')
    process.exit(2)
  }
  const targets = (opts.targets ?? 'ws-memory,channels-memory').split(',')
  if (opts.alt !== undefined) process.env.BENCH_ALT_ENTRY = opts.alt
  const load = {
    connections: Number(opts.connections ?? 2000),
    groups: Number(opts.groups ?? 20),
    rate: Number(opts.rate ?? 50),
    payload: Number(opts.payload ?? 128),
    warm: Number(opts.warm ?? 2000),
    messages: Number(opts.messages ?? 1000)
  }
  const rounds = Number(opts.rounds ?? 1)
  const pin = hasTaskset()
  const results = new Map(targets.map(t => [t, []]))
  for (let round = 1; round <= rounds; round++) {
    for (const target of targets) {
      const row = await measure(target, load, pin, opts.keep)
      results.get(target).push(row)
      console.log(`round ${round} ${target}: ${Math.round(row.net)} instructions per delivery beyond idle (${Math.round(row.gross)} in all; idle ${Math.round(row.idlePerSecond / 1e3).toLocaleString('en')} thousand a second)`)
    }
  }
  const { connections, groups, rate, messages } = load
  console.log(`\nmedian of ${rounds} round(s), ${connections} connections in ${groups} groups, ${messages} group messages of ${load.payload} B at ${rate}/s (${messages * connections / groups} deliveries) after ${load.warm} to warm up:`)
  const med = (rows, key) => median(rows.map(r => r[key]))
  const floor = med(results.get(targets[0]), 'net')
  console.log(`| target | instructions per delivery, beyond idle | ${targets[0]}'s / this | in all | idle, thousands a second |`)
  console.log('|---|--:|--:|--:|--:|')
  for (const [target, rows] of results) {
    const net = med(rows, 'net')
    console.log(`| ${target} | ${Math.round(net).toLocaleString('en')} | ${(floor / net).toFixed(2)}× | ${Math.round(med(rows, 'gross')).toLocaleString('en')} | ${Math.round(med(rows, 'idlePerSecond') / 1e3).toLocaleString('en')} |`)
  }
}

async function measure (target, { connections, groups, rate, payload, warm, messages }, pin, keep) {
  const dir = keep === undefined ? mkdtempSync(join(tmpdir(), 'instructions-')) : resolvePath(keep, target)
  mkdirSync(dir, { recursive: true })
  const stdio = ['ignore', 'inherit', 'inherit', 'ipc']
  const valgrind = ['valgrind', '--tool=callgrind', '--smc-check=all-non-file', '--quiet', `--callgrind-out-file=${join(dir, 'callgrind.%p')}`, process.execPath, '--no-concurrent-recompilation', '--min-semi-space-size=16', '--expose-gc', '--no-memory-reducer', ...(keep === undefined ? [] : ['--perf-basic-prof']), self, 'server', target, String(groups)]
  // With --perf-basic-prof V8 also writes an isolate log to the working directory: the dumps' one.
  const srv = pin ? spawn('taskset', ['-c', '0', ...valgrind], { stdio, cwd: dir }) : spawn(valgrind[0], valgrind.slice(1), { stdio, cwd: dir })
  try {
    const port = await new Promise((resolve, reject) => {
      srv.once('message', m => resolve(m.port))
      srv.once('exit', code => reject(new Error(`${target} server exited (${code})`)))
    })
    const cliArgs = [self, 'clients', String(port), String(connections), String(groups)]
    const cli = pin ? spawn('taskset', ['-c', '1', process.execPath, ...cliArgs], { stdio }) : spawn(process.execPath, cliArgs, { stdio })
    await new Promise((resolve, reject) => {
      cli.once('message', resolve)
      cli.once('exit', code => reject(new Error(`clients of ${target} exited (${code}) before all were open`)))
    })
    const perMessage = connections / groups
    const ask = (child, message) => new Promise(resolve => { child.once('message', resolve); child.send(message) })
    const received = () => ask(cli, 'count')
    const untilReceived = async n => { while (await received() < n) await sleep(200) }
    await ask(srv, { publish: warm, rate: rate * 4, from: 0, payload })
    await untilReceived(warm * perMessage)
    await ask(srv, { collect: true })
    // The collection deoptimizes code that held objects it freed (Node's stream writes among
    // them): publish again, so that it is compiled again before the windows, not in them.
    const rewarm = Math.ceil(warm / 2)
    await ask(srv, { publish: rewarm, rate: rate * 4, from: warm, payload })
    await untilReceived((warm + rewarm) * perMessage)
    // What the server does with no message to deliver (its timers) in as long a
    // window as the measured one, so that it can be told apart.
    const window = async work => {
      callgrind(['-z', String(srv.pid)])
      const start = performance.now()
      await work()
      const seconds = (performance.now() - start) / 1000
      callgrind(['-d', String(srv.pid)])
      return { seconds, total: counted(dir, srv.pid, ++dumps) }
    }
    let dumps = 0
    const idle = await window(() => sleep(messages / rate * 1000))
    const busy = await window(async () => {
      await ask(srv, { publish: messages, rate, from: warm + rewarm, payload })
      await untilReceived((warm + rewarm + messages) * perMessage)
    })
    cli.kill()
    await exited(cli)
    const deliveries = messages * perMessage
    const idlePerSecond = idle.total / idle.seconds
    return { gross: busy.total / deliveries, net: (busy.total - idlePerSecond * busy.seconds) / deliveries, idlePerSecond }
  } finally {
    srv.kill()
    await exited(srv)
    if (keep === undefined) rmSync(dir, { recursive: true, force: true })
  }
}

/** The instructions in the `n`th dump of callgrind's counters for process `pid`. */
function counted (dir, pid, n) {
  const dump = readFileSync(join(dir, `callgrind.${pid}.${n}`), 'utf8')
  return Number(/^(?:summary|totals): (\d+)/m.exec(dump)[1])
}

function callgrind (args) {
  const done = spawnSync('callgrind_control', args, { encoding: 'utf8' })
  if (done.status !== 0) throw new Error(`callgrind_control ${args.join(' ')} failed: ${done.stderr || done.stdout}`)
}

async function server (target, groups) {
  const s = await startNamedTarget(target, { prefix: `instructions${process.pid}`, heartbeatInterval: 0 })
  const count = Number(groups)
  process.send({ port: s.port })
  // `publish` messages of `bytes` from sequence `from` on, `rate` a second, then an answer; or
  // `collect`: a full collection, then an answer.
  process.on('message', ({ publish, rate, from, payload: bytes, collect }) => {
    if (collect) {
      globalThis.gc()
      process.send('collected')
      return
    }
    const payload = makePayloadFactory(bytes)
    let seq = from
    const timer = setInterval(() => {
      seq++
      s.publish(groupName(seq % count), payload(seq, seq % count, performance.now()))
      if (seq - from < publish) return
      clearInterval(timer)
      process.send('published')
    }, 1000 / rate)
  })
}

async function clients (port, n, groups) {
  await countingClients(port, n, i => i % groups)
}
