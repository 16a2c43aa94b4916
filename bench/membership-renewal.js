// What renewing memberships costs Redis. Every membershipLease / 3 (20 s by default) each process
// runs the layer's renewal script once per group it has members in, carrying those members. This
// runs that script (from the built package) as a process with 50 members in a group of 100 does,
// and reads Redis's own CPU time for it from INFO commandstats.
//
//   node bench/membership-renewal.js                       # this build (npm run build first)
//   node bench/membership-renewal.js --alt=../other/dist   # and another build, in alternating rounds
//   options: --members=<n> (renewed per call, 50) --group=<n> (the group's size, 100) --calls=<n> (per round, 2000) --rounds=<n> (7)
//            --presence=<bytes> (each member also carries a presence entry of that size; 0: none)
//
// Use a Redis of your own (REDIS_URL, default redis://127.0.0.1:6379): RESETSTAT clears its counters.
import { Redis } from 'ioredis'
import path from 'node:path'
import { pathToFileURL, fileURLToPath } from 'node:url'
import { median, parseFlags } from './lib/common.js'

const args = parseFlags(process.argv.slice(2), ['alt', 'members', 'group', 'calls', 'rounds', 'presence'], import.meta.url)
const members = Number(args.members ?? 50)
const groupSize = Number(args.group ?? 100)
const calls = Number(args.calls ?? 2000)
const rounds = Number(args.rounds ?? 7)
const here = path.dirname(fileURLToPath(import.meta.url))
const builds = { current: path.join(here, '..', 'dist') }
if (args.alt !== undefined) builds.alt = path.resolve(args.alt)

const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379')
const key = `fc-bench-renewal:${process.pid}:gm:{room}`
const presenceKey = `fc-bench-renewal:${process.pid}:pi:{room}`
const ours = Array.from({ length: members }, (_, i) => `specific.${'a'.repeat(22)}!${i}`)
const pairs = ours.flatMap(channel => [channel, 60_000])
const presenceBytes = Number(args.presence ?? 0)
const presence = presenceBytes > 0 ? ours.flatMap(channel => [channel, Buffer.alloc(presenceBytes, 0x61)]) : []

const scripts = {}
for (const [name, dist] of Object.entries(builds)) {
  const { renewMembers } = await import(pathToFileURL(path.join(dist, 'layers', 'redis', 'group-scripts.js')).href)
  // Since presence entries are written back, the script's first argument counts the membership values.
  const counted = renewMembers.lua.includes('local n = tonumber(ARGV[1])')
  if (!counted && presence.length > 0) throw new Error(`${dist}: this build's renewal carries no presence`)
  const args = counted ? [pairs.length, ...pairs, ...presence] : pairs
  scripts[name] = { ...renewMembers, sha: await redis.script('LOAD', renewMembers.lua), args }
}

async function round (s) {
  await redis.del(key, presenceKey)
  const others = Array.from({ length: groupSize - members }, (_, i) => [Date.now() + 60_000, `specific.${'b'.repeat(22)}!${i}`])
  if (others.length > 0) await redis.zadd(key, ...others.flat())
  await redis.evalsha(s.sha, s.keys, key, presenceKey, ...s.args) // the first call adds; the rest renew
  await redis.config('RESETSTAT')
  for (let i = 0; i < calls; i++) await redis.evalsha(s.sha, s.keys, key, presenceKey, ...s.args)
  const m = /cmdstat_evalsha:calls=(\d+),usec=(\d+)/.exec(await redis.info('commandstats'))
  return Number(m[2]) / Number(m[1])
}

const results = Object.fromEntries(Object.keys(scripts).map(name => [name, []]))
for (const s of Object.values(scripts)) await round(s) // warm-up
for (let r = 0; r < rounds; r++) for (const [name, s] of Object.entries(scripts)) results[name].push(await round(s))
for (const [name, perCall] of Object.entries(results)) {
  const mid = median(perCall)
  console.log(`${name} (${builds[name]}): ${mid.toFixed(1)} µs of Redis per renewal call of ${members} members in a group of ${groupSize}` +
    `${presenceBytes > 0 ? `, each with ${presenceBytes} bytes of presence` : ''} ` +
    `(${(mid / members).toFixed(2)} µs per member; rounds: ${perCall.map(x => x.toFixed(1)).join(', ')})`)
}
await redis.del(key, presenceKey)
redis.disconnect()
