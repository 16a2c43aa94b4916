// What one more idle connection costs a server process: memory after a GC with no connection,
// with `connections`, and with twice that, for each target in one server process of its own.
// The first batch's growth holds what a process takes once, when connections first arrive (heap
// pages V8 commits ahead, memory its compiler leaves to the allocator); the second batch's growth
// over its size is the cost at the margin, what a capacity plan multiplies.
//
//   node bench/memory-margin.js [--targets=channels-memory,channels-redis,ws-memory,ws-redis]
//     [--connections=5000] [--groups=100]
//
// Per connection, in KiB, for each batch: RSS, V8's heap used and heap committed. The full
// bench's "RSS KiB per idle conn" is the first batch's figure at 10,000 connections, summed over
// the servers a target runs (two over Redis). `npm run build` first (the channels targets import
// the built package); the Redis targets need Redis at REDIS_URL (default 127.0.0.1:6379).
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { collectGarbage, exited, groupName, openClients, parseFlags, sleep, startNamedTarget } from './lib/common.js'

const self = fileURLToPath(import.meta.url)

if (process.argv[2] === 'server') await server(process.argv[3])
else await main()

async function main () {
  const opts = parseFlags(process.argv.slice(2), ['targets', 'connections', 'groups'], import.meta.url)
  const targets = (opts.targets ?? 'channels-memory,channels-redis,ws-memory,ws-redis').split(',')
  const n = Number(opts.connections ?? 5000)
  const groups = Number(opts.groups ?? 100)
  const kib = bytes => (bytes / n / 1024).toFixed(2)
  process.stdout.write('| target | batch | connections | RSS KiB/conn | heap used KiB/conn | heap committed KiB/conn |\n|---|---|--:|--:|--:|--:|\n')
  for (const target of targets) {
    const child = fork(self, ['server', target], { execArgv: ['--expose-gc'] })
    const ask = () => new Promise(resolve => { child.once('message', resolve); child.send('measure') })
    // A server that cannot start (no Redis, a target that does not exist) exits instead of answering.
    const { port } = await new Promise((resolve, reject) => {
      child.once('message', resolve)
      child.once('exit', code => reject(new Error(`${target}: its server exited (code ${code}) before it listened`)))
    })
    const sockets = []
    let before = await ask()
    for (const batch of ['first', 'second']) {
      const offset = sockets.length
      await openClients(n, i => `ws://127.0.0.1:${port}/ws/${groupName((offset + i) % groups)}`, ws => sockets.push(ws))
      await sleep(1500)
      const after = await ask()
      if (after.connections !== sockets.length) throw new Error(`${target}: the server holds ${after.connections} connections, not ${sockets.length}`)
      process.stdout.write(`| ${target} | ${batch} | ${after.connections} | ${kib(after.rss - before.rss)} | ${kib(after.heapUsed - before.heapUsed)} | ${kib(after.heapTotal - before.heapTotal)} |\n`)
      before = after
    }
    for (const ws of sockets) ws.terminate()
    child.kill()
    await exited(child)
  }
}

async function server (target) {
  const app = await startNamedTarget(target, { prefix: `bench-margin-${process.pid}` })
  process.on('message', async () => {
    await collectGarbage()
    const { rss, heapUsed, heapTotal } = process.memoryUsage()
    process.send({ rss, heapUsed, heapTotal, connections: app.connections() })
  })
  // Whatever stops the parent (a failed batch, a ^C) stops this server too.
  process.on('disconnect', () => process.exit(0))
  process.send({ port: app.port })
}
