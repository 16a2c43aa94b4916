/**
 * The Lua scripts of the Redis layer. Each touches keys of one hash slot only (they share a hash
 * tag), so they run unchanged on Redis Cluster. Times are Redis server time, so processes with
 * skewed clocks agree on expiry.
 */
import { createHash } from 'node:crypto'
import type { Client } from './connections.js'

/** Queue elements start with their expiry deadline (server ms) in this many ASCII digits; the scripts read it. */
export const DEADLINE_WIDTH = 16

/**
 * Redis server time as well as this process knows it: scripts return the server's clock, and
 * expiry checks made here compare against it, so processes with skewed clocks agree. The offset is
 * kept against the monotonic clock, not this host's wall clock: a wall clock stepped here (NTP, a
 * resumed VM) moves no deadline, and only Redis' own clock (read at each reply that has it) does.
 */
export class ServerClock {
  // Until a reply says the server's time, this host's wall clock.
  #offset = Date.now() - performance.now()
  // When a reply last said the server's time (monotonic ms), or -Infinity: never.
  #observedAt = -Infinity

  now (): number {
    return performance.now() + this.#offset
  }

  /**
   * Whether a reply has said the server's time within the last minute (until one has, now() is
   * this host's own clock): what reads deadlines without a script asks again when it is not.
   */
  get known (): boolean {
    return performance.now() - this.#observedAt < FRESH_MS
  }

  /**
   * Learns the server time (ms) from a reply: a number, or its digits (a client with ioredis'
   * `stringNumbers` returns integers so); ignores anything that is not a time.
   */
  observe (serverNow: unknown): void {
    const ms = typeof serverNow === 'string' ? Number(serverNow) : serverNow
    if (typeof ms !== 'number' || !Number.isFinite(ms)) return
    const at = performance.now()
    this.#offset = ms - at
    this.#observedAt = at
  }

  /** Learns the server time from the reply of Redis' `TIME` (seconds and microseconds). */
  observeTime ([seconds, micros]: readonly unknown[]): void {
    this.observe(Number(seconds) * 1000 + Math.floor(Number(micros) / 1000))
  }
}

// How long a reading of the server's time is trusted before a send that reads deadlines asks again
// (the two clocks drift apart by parts per million, and Redis' own may be stepped).
const FRESH_MS = 60_000

export interface Script {
  readonly lua: string
  readonly sha: string
  readonly keys: number
}

/** A script whose body may use `now`, the server time in ms. */
export function script (keys: number, body: string): Script {
  const lua = `local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n${body}`
  return { lua, sha: createHash('sha1').update(lua).digest('hex'), keys }
}

/**
 * Named channel send. KEYS[1] queue; ARGV capacity, expiry ms, payload.
 * Drops expired messages at the head, refuses when `capacity` remain, appends with its deadline.
 * Returns { accepted (1|0), server now, expired messages dropped }.
 */
export const queuePush = script(1, `
local key = KEYS[1]
local dropped = 0
local head = redis.call('LINDEX', key, 0)
while head and (tonumber(string.sub(head, 1, ${DEADLINE_WIDTH})) or 0) <= now do
  redis.call('LPOP', key)
  dropped = dropped + 1
  head = redis.call('LINDEX', key, 0)
end
if redis.call('LLEN', key) >= tonumber(ARGV[1]) then return {0, now, dropped} end
local expiry = tonumber(ARGV[2])
redis.call('RPUSH', key, string.format('%0${DEADLINE_WIDTH}d', now + expiry) .. ARGV[3])
if redis.call('PTTL', key) < expiry then redis.call('PEXPIRE', key, expiry) end
return {1, now, dropped}
`)

/**
 * Lua that records memberships in the sorted set KEYS[1] from `pairs` (a Lua table of channel,
 * ms to live), forgets expired members and lets the key expire with its last member; `last` is
 * then that member's deadline (or nil), for keys that live as long. Members go in one
 * ZADD per 500, not one call each: a renewal of 50 members then costs Redis about a fifth less.
 */
export function recordMembersLua (pairs: string): string {
  return `
local members = ${pairs}
local batch = {}
for i = 1, #members, 2 do
  batch[#batch + 1] = now + tonumber(members[i + 1])
  batch[#batch + 1] = members[i]
  if #batch == 1000 or i + 2 > #members then
    redis.call('ZADD', KEYS[1], unpack(batch))
    batch = {}
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
if last then redis.call('PEXPIREAT', KEYS[1], math.ceil(tonumber(last))) end
`
}

/** Adds ARGV[1] to the set KEYS[1], which then expires ARGV[2] ms from now, in one step. */
export const addToSet = script(1, `
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
`)

/**
 * Records memberships. KEYS[1] a group's member set; ARGV pairs of (channel, ms to live).
 * Returns the server time.
 */
export const recordMembers = script(1, `${recordMembersLua('ARGV')}
return now
`)


type ScriptArgs = Array<string | number | Buffer>

/**
 * ioredis' scripting methods, each called with (sha or lua, number of keys, ...keys, ...args). It
 * has the Buffer-replying forms at run time, but does not declare them.
 */
interface Scripting<R> {
  evalsha (...args: ScriptArgs): R
  eval (...args: ScriptArgs): R
  evalshaBuffer (...args: ScriptArgs): R
  evalBuffer (...args: ScriptArgs): R
}

/** The Buffer-replying form of each scripting command. */
const BINARY_FORM = { evalsha: 'evalshaBuffer', eval: 'evalBuffer' } as const

/** Adds a binary EVALSHA of `s` to a pipeline (check its reply with `lostScript`). */
export function queueScript<P> (pipeline: P, s: Script, keys: readonly string[], args: readonly string[]): P {
  return (pipeline as unknown as Scripting<P>).evalshaBuffer(s.sha, s.keys, ...keys, ...args)
}

function isNoScript (err: unknown): boolean {
  return err instanceof Error && err.message.startsWith('NOSCRIPT')
}

/** Sends one scripting command: `evalsha` or `eval` and its arguments. */
export type ScriptSender = (name: 'evalsha' | 'eval', args: ScriptArgs) => Promise<unknown>

/**
 * EVALSHA, falling back to EVAL once when Redis lost its script cache (a restart, a new node),
 * through ioredis' own methods (autopipelined on the layer's connections).
 * With `binary`, strings in the reply come as Buffers (payloads are msgpack, not text).
 */
export function runScript (client: Client, s: Script, keys: readonly string[], args: ReadonlyArray<string | number | Buffer>,
  binary = false): Promise<unknown> {
  const methods = client as unknown as Scripting<Promise<unknown>>
  return runScriptBy((name, all) => methods[binary ? BINARY_FORM[name] : name](...all), s, keys, args)
}

/** `runScript` through `send` (RedisConnections.scriptSender, for a call that sends a message). */
export async function runScriptBy (send: ScriptSender, s: Script, keys: readonly string[], args: ReadonlyArray<string | number | Buffer>): Promise<unknown> {
  try {
    return await send('evalsha', [s.sha, s.keys, ...keys, ...args])
  } catch (err) {
    if (!isNoScript(err)) throw err
    return await send('eval', [s.lua, s.keys, ...keys, ...args])
  }
}

/** Whether a pipeline's reply is Redis saying it lost the script (run it again with `runScript`). */
export function lostScript (reply: [Error | null, unknown] | undefined): boolean {
  return reply !== undefined && isNoScript(reply[0])
}
