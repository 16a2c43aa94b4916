// What a group send costs the process that sends it, over Redis: this build's
// `RedisChannelLayer.groupSend()` against raw ioredis publishing the same message as JSON (what
// the `ws-redis` floor does), in alternating rounds, this process pinned to one CPU when it can
// be. The group has no member, so no fan-out is in it: encoding, the Redis command and its reply.
// Reported: the median over the rounds of this process's CPU (user + system) per send.
//
//   node bench/group-send.js                        # this build (npm run build first)
//   node bench/group-send.js --alt=../other/dist    # and another build
//   options: --sends=<n> (per round, 20000) --in-flight=<n> (sends awaited together, 10) --rounds=<n> (5) --smoke
//
// Use a Redis of your own (REDIS_URL, default redis://127.0.0.1:6379).
import { execFileSync } from 'node:child_process'
import { Redis } from 'ioredis'
import path from 'node:path'
import { pathToFileURL, fileURLToPath } from 'node:url'
import { hasTaskset, median, parseFlags } from './lib/common.js'

const args = parseFlags(process.argv.slice(2), ['alt', 'sends', 'in-flight', 'rounds', 'smoke'], import.meta.url)
const smoke = args.smoke === true
const sends = Number(args.sends ?? (smoke ? 200 : 20_000))
const inFlight = Number(args['in-flight'] ?? 10)
const rounds = Number(args.rounds ?? (smoke ? 1 : 5))
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const here = path.dirname(fileURLToPath(import.meta.url))
if (hasTaskset()) execFileSync('taskset', ['-pc', '0', String(process.pid)], { stdio: 'ignore' })

const message = { type: 'chat.message', text: 'x'.repeat(128) }
const prefix = `fc-bench-send-${process.pid}`
const targets = {}
const closers = []

const redis = new Redis(redisUrl)
closers.push(() => redis.disconnect())
targets['raw ioredis PUBLISH'] = () => redis.publish(`${prefix}:g:{room}`, JSON.stringify(message))

const builds = { 'this build': path.join(here, '..', 'dist') }
if (args.alt !== undefined) builds[`--alt ${args.alt}`] = path.resolve(args.alt)
for (const [name, dist] of Object.entries(builds)) {
  const { RedisChannelLayer } = await import(pathToFileURL(path.join(dist, 'index.js')).href)
  const layer = new RedisChannelLayer({ url: redisUrl, prefix })
  closers.push(() => layer.close())
  targets[`groupSend, ${name}`] = () => layer.groupSend('room', message)
}

async function round (send) {
  const before = process.cpuUsage()
  for (let i = 0; i < sends; i += inFlight) await Promise.all(Array.from({ length: inFlight }, send))
  const used = process.cpuUsage(before)
  return (used.user + used.system) / sends
}

const results = Object.fromEntries(Object.keys(targets).map(name => [name, []]))
for (const send of Object.values(targets)) await round(send) // warm-up: connections, scripts, JIT
for (let r = 0; r < rounds; r++) for (const [name, send] of Object.entries(targets)) results[name].push(await round(send))
const floor = median(results['raw ioredis PUBLISH'])
for (const [name, perSend] of Object.entries(results)) {
  const mid = median(perSend)
  console.log(`${name}: ${mid.toFixed(1)} µs of CPU per send (${(mid / floor).toFixed(2)}× raw; rounds: ${perSend.map(x => x.toFixed(1)).join(', ')})`)
}
for (const close of closers) await close()
