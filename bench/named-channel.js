// What a named channel (a worker's queue, on the Redis layer) costs per message: one process
// sends `--messages` messages one after another while a worker in another layer instance receives
// them one at a time, as a ChannelConsumer does. Reports messages a second, the CPU of the Node
// process (both layers, sender and worker) and Redis's own CPU (INFO commandstats) per message.
//
//   node bench/named-channel.js                       # this build (npm run build first)
//   node bench/named-channel.js --alt=../other/dist   # and another build, in alternating rounds
//   options: --messages=<n> (per round, 5000) --rounds=<n> (5)
//
// Use a Redis of your own (REDIS_URL, default redis://127.0.0.1:6379): RESETSTAT clears its counters.
import { Redis } from 'ioredis'
import path from 'node:path'
import { pathToFileURL, fileURLToPath } from 'node:url'
import { median, parseFlags } from './lib/common.js'

const args = parseFlags(process.argv.slice(2), ['alt', 'messages', 'rounds'], import.meta.url)
const messages = Number(args.messages ?? 5000)
const rounds = Number(args.rounds ?? 5)
const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const here = path.dirname(fileURLToPath(import.meta.url))
const builds = { current: path.join(here, '..', 'dist') }
if (args.alt !== undefined) builds.alt = path.resolve(args.alt)
const layers = {}
for (const [name, dist] of Object.entries(builds)) {
  layers[name] = (await import(pathToFileURL(path.join(dist, 'index.js')).href)).RedisChannelLayer
}
const redis = new Redis(url)

async function round (RedisChannelLayer) {
  const prefix = `fc-bench-named-${process.pid}`
  const sender = new RedisChannelLayer({ url, prefix, capacity: messages })
  const worker = new RedisChannelLayer({ url, prefix })
  await worker.send('warm-up', { type: 'warm-up' })
  await worker.receive('warm-up')
  await redis.config('RESETSTAT')
  const started = performance.now()
  const cpu = process.cpuUsage()
  const sending = (async () => { for (let n = 0; n < messages; n++) await sender.send('jobs', { type: 'job', n }) })()
  for (let n = 0; n < messages; n++) {
    const message = await worker.receive('jobs')
    if (message.n !== n) throw new Error(`message ${message.n} came as number ${n}`)
  }
  await sending
  const seconds = (performance.now() - started) / 1000
  const used = process.cpuUsage(cpu)
  const stats = await redis.info('commandstats')
  const redisUs = [...stats.matchAll(/usec=(\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0)
  await Promise.all([sender.close(), worker.close()])
  return { perSecond: messages / seconds, nodeUs: (used.user + used.system) / messages, redisUs: redisUs / messages }
}

const results = Object.fromEntries(Object.keys(builds).map(name => [name, []]))
for (const layer of Object.values(layers)) await round(layer) // warm-up
for (let r = 0; r < rounds; r++) for (const [name, layer] of Object.entries(layers)) results[name].push(await round(layer))
for (const [name, all] of Object.entries(results)) {
  const mid = key => median(all.map(r => r[key]))
  console.log(`${name} (${builds[name]}): ${Math.round(mid('perSecond'))} messages/s, ${mid('nodeUs').toFixed(0)} µs of Node CPU ` +
    `and ${mid('redisUs').toFixed(1)} µs of Redis CPU per message (medians of ${rounds} rounds of ${messages})`)
}
redis.disconnect()
