/**
 * The Lua scripts of a named channel's claims (claims.ts). A claim's key starts with a marker, an
 * element shorter than a queue element (at most DEADLINE_WIDTH bytes), which holds the number of
 * the last removal of a message handed over.
 */
import { DEADLINE_WIDTH, script } from './scripts.js'

/** Claims whose lease ran out that one renewal gives back, at most. */
const SWEEP_LIMIT = 8

/**
 * Lua: removes from KEYS[1] the messages handed over in ARGV[from…], pairs of (message, removal
 * number) oldest first, except those whose removal ran already: the marker holds the number of the
 * last one run.
 */
const removeHanded = (from: number): string => `
local marker = redis.call('LINDEX', KEYS[1], 0)
if marker and #marker > ${DEADLINE_WIDTH} then marker = false end
local last = marker and tonumber(marker) or 0
local done = last
for i = ${from}, #ARGV, 2 do
  local n = tonumber(ARGV[i + 1])
  if n > done then
    redis.call('LREM', KEYS[1], 1, ARGV[i])
    done = n
  end
end
if marker and done > last then redis.call('LSET', KEYS[1], 0, string.format('%d', done)) end`

/** Removes what was handed over from the claim. KEYS[1] claim; ARGV pairs of (message, removal number). */
export const removal = script(1, `${removeHanded(1)}
return 1
`)

/**
 * Renews a claim's lease, and makes sure of its marker and expiry (a `flush()` may have deleted
 * it). KEYS[1] claim, KEYS[2] the channel's claims; ARGV claim id, lease ms, key lifetime ms.
 * Returns the ids of the channel's claims whose lease ran out (at most SWEEP_LIMIT).
 */
export const renewal = script(2, `
local marker = redis.call('LINDEX', KEYS[1], 0)
if not marker then redis.call('RPUSH', KEYS[1], '')
elseif #marker > ${DEADLINE_WIDTH} then redis.call('LPUSH', KEYS[1], '') end
local lives = tonumber(ARGV[3])
redis.call('PEXPIRE', KEYS[1], lives)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
if redis.call('PTTL', KEYS[2]) < lives then redis.call('PEXPIRE', KEYS[2], lives) end
return redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, ${SWEEP_LIMIT})
`)

/**
 * Removes what was handed over (as `removal`), then gives the claim's messages back to the head of
 * their queue, in order, except expired ones; then ends the claim, or (mode `return`) keeps it.
 * With mode `lease`, gives back only once the claim's lease ran out.
 * KEYS[1] claim, KEYS[2] the channel's claims, KEYS[3] queue; ARGV claim id, mode, then pairs of
 * (message handed over, removal number).
 * Returns { given back, expired }, or { -1, 0 } for a claim whose lease still runs.
 */
export const giveBack = script(3, `${removeHanded(3)}
if ARGV[2] == 'lease' then
  local lease = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if lease and tonumber(lease) > now then return {-1, 0} end
end
local back, expired = 0, 0
local element = redis.call('LINDEX', KEYS[1], -1)
while element and #element > ${DEADLINE_WIDTH} do
  redis.call('RPOP', KEYS[1])
  local remaining = (tonumber(string.sub(element, 1, ${DEADLINE_WIDTH})) or 0) - now
  if remaining > 0 then
    redis.call('LPUSH', KEYS[3], element)
    if redis.call('PTTL', KEYS[3]) < remaining then redis.call('PEXPIRE', KEYS[3], remaining) end
    back = back + 1
  else
    expired = expired + 1
  end
  element = redis.call('LINDEX', KEYS[1], -1)
end
if ARGV[2] ~= 'return' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return {back, expired}
`)
