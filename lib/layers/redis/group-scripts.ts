/**
 * The scripts of durable groups: history with offsets, recovery and presence. Keys of one group
 * share its hash tag (keys.ts), so each script touches one Cluster slot.
 *
 *   P:h:{group}   hash    e: epoch, t: the latest offset, p: the epoch before the last renewal
 *                         (expires `idle` after the last use)
 *   P:s:{group}   stream  id <offset>-0, fields p: payload, t: server ms (trimmed to `size`,
 *                         expires `ttl` after the last send); `t` also tells one write of an
 *                         offset from another (a Redis that lost its last writes gives it again)
 *   P:pr:{group}  string  set by the process that reaps the group's presence, for one reaping period
 *   P:pi:{group}  hash    channel → presence info of a membership recorded in P:gm:{group}
 *                         (expires two reaping periods after the last lease of a membership
 *                         that recorded presence: the memberships of other processes that
 *                         record none do not keep it alive, nor the entries of a process that
 *                         died; but a dead process' entry is still there when its lease has run
 *                         out, for a surviving process to reap and announce)
 */
import { recordMembersLua, script } from './scripts.js'
import { REAP_MS } from '../cluster/leases.js'

// Extends the presence hash KEYS[2] to `deadline` (server ms, a lease's end) and two reaping
// periods more, when it would expire sooner: an entry whose lease ran out must still be there when
// a surviving process next looks, or its leave is never announced.
const EXTEND_PRESENCE = `
local function extendPresence (deadline)
  deadline = deadline + ${2 * REAP_MS}
  local left = redis.call('PTTL', KEYS[2])
  if left == -1 or (left >= 0 and now + left < deadline) then redis.call('PEXPIREAT', KEYS[2], math.ceil(deadline)) end
end
`

// The group's epoch, made now from ARGV[candidate] when the group has none (its history is new,
// or was lost): a new epoch starts a new stream.
function epochLua (meta: string, stream: string, candidate: string, idle: string): string {
  return `
local epoch = redis.call('HGET', ${meta}, 'e')
if not epoch then
  epoch = ${candidate}
  redis.call('DEL', ${stream})
  redis.call('HSET', ${meta}, 'e', epoch, 't', 0)
end
redis.call('PEXPIRE', ${meta}, ${idle})
`
}

// Appends the live entries (sent after `oldest`) of an XRANGE/XREVRANGE reply to `out` as
// offset, payload pairs.
const LIVE_ENTRIES = `
local function live (entries, oldest, out)
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    if tonumber(fields[4]) > oldest then
      table.insert(out, tonumber(string.match(entry[1], '^%d+')))
      table.insert(out, fields[2])
    end
  end
end
`

/**
 * A group message with history. KEYS meta, stream, named members; ARGV payload, size, ttl ms,
 * idle ms, epoch candidate, '1' for sharded pub/sub, the group's pub/sub channel.
 * Takes the next offset, keeps the payload, publishes it followed by its position, when it was
 * written and when the message kept at the offset before it was [offset, epoch, t, previous t]
 * (a second msgpack value; no previous t when that message is not kept), and returns { offset,
 * epoch, live named members }. The channel is an
 * argument, not a key: ioredis applies its keyPrefix to a script's KEYS, and not to the channels
 * the layer subscribes.
 */
export const publishWithHistory = script(3, `${epochLua('KEYS[1]', 'KEYS[2]', 'ARGV[5]', 'ARGV[4]')}
local offset = redis.call('HINCRBY', KEYS[1], 't', 1)
local before = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
local previous = before and before[1] == (offset - 1) .. '-0' and tonumber(before[2][4]) or nil
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], offset .. '-0', 'p', ARGV[1], 't', now)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call(ARGV[6] == '1' and 'SPUBLISH' or 'PUBLISH', ARGV[7], ARGV[1] .. cmsgpack.pack({offset, epoch, now, previous}))
return {offset, epoch, redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. now, '+inf')}
`)

/**
 * A membership with history or presence, in one step. KEYS members, presence, meta, stream;
 * ARGV channel, lease ms, presence info ('' for none), ttl ms ('0': no history), idle ms, epoch
 * candidate, since epoch ('' for none), since offset.
 * Returns { server now, the presence info recorded before or false, epoch or false, latest
 * offset, live entries after `since` (offset, payload pairs) when `since` is in this epoch }.
 */
export const joinGroup = script(4, `${LIVE_ENTRIES}${EXTEND_PRESENCE}
local channel = ARGV[1]
local before = false
if ARGV[3] ~= '' then
  before = redis.call('HGET', KEYS[2], channel)
  redis.call('HSET', KEYS[2], channel, ARGV[3])
end
${recordMembersLua('{channel, ARGV[2]}')}
if ARGV[3] ~= '' then extendPresence(now + tonumber(ARGV[2])) end
if ARGV[4] == '0' then return {now, before, false, 0, {}} end
${epochLua('KEYS[3]', 'KEYS[4]', 'ARGV[6]', 'ARGV[5]')}
local top = tonumber(redis.call('HGET', KEYS[3], 't'))
local since = tonumber(ARGV[8])
local out = {}
if ARGV[7] == epoch and since < top then
  live(redis.call('XRANGE', KEYS[4], (since + 1) .. '-0', '+'), now - tonumber(ARGV[4]), out)
end
return {now, before, epoch, top, out}
`)

/**
 * Renews memberships and their presence entries. KEYS members, presence; ARGV n, then n values
 * of (channel, ms to live) pairs, then (channel, presence info) pairs of those memberships that
 * recorded presence: an entry the hash lost is written again, and the hash lives as long as the
 * longest of them.
 * Returns { server now, the channels whose entry was written again }.
 */
export const renewMembers = script(2, `${EXTEND_PRESENCE}
local n = tonumber(ARGV[1])
local given = {}
local lives = {}
for i = 2, n + 1, 2 do
  given[i - 1] = ARGV[i]
  given[i] = ARGV[i + 1]
  lives[ARGV[i]] = tonumber(ARGV[i + 1])
end
${recordMembersLua('given')}
local restored = {}
local longest = nil
for i = n + 2, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then table.insert(restored, ARGV[i]) end
  local life = lives[ARGV[i]]
  if life and (longest == nil or life > longest) then longest = life end
end
if longest then extendPresence(now + longest) end
return {now, restored}
`)

/**
 * Ends memberships. KEYS members, presence; ARGV channels.
 * Returns the presence entries they had, as channel, info pairs.
 */
export const removeMembers = script(2, `
local out = {}
for i = 1, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  local info = redis.call('HGET', KEYS[2], ARGV[i])
  if info then
    redis.call('HDEL', KEYS[2], ARGV[i])
    table.insert(out, ARGV[i])
    table.insert(out, info)
  end
end
return out
`)

// Splits the presence entries into live ones and those whose membership ended (KEYS members, presence).
const PRESENCE_LUA = `
local alive, dead = {}, {}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local score = redis.call('ZSCORE', KEYS[1], all[i])
  local into = (score and tonumber(score) > now) and alive or dead
  table.insert(into, all[i])
  table.insert(into, all[i + 1])
end
`

/** The live presence entries. KEYS members, presence. Returns channel, info pairs. */
export const readPresence = script(2, `${PRESENCE_LUA}
return alive
`)

/**
 * Removes the presence entries of memberships that ended without a word (their process died and
 * its lease ran out). KEYS members, presence, reaped; ARGV ms until the next reap. Returns them
 * as channel, info pairs: only the caller that removed an entry gets it, so each is announced
 * once. Every process with members in the group calls it each reaping period; the first one in a
 * period reads the entries, the others find `reaped` set and return at once.
 */
export const reapPresence = script(3, `
if not redis.call('SET', KEYS[3], 1, 'NX', 'PX', ARGV[1]) then return {} end
${PRESENCE_LUA}
for i = 1, #dead, 2 do
  redis.call('HDEL', KEYS[2], dead[i])
  redis.call('ZREM', KEYS[1], dead[i])
end
return dead
`)

/**
 * A new epoch for a group whose offsets went back (Redis lost its last writes): only while the
 * group is still in the epoch seen, so the processes that notice it make one. Its kept messages
 * keep their offsets. KEYS meta; ARGV epoch seen, new epoch. Returns the group's epoch now.
 */
export const renewEpoch = script(1, `
local epoch = redis.call('HGET', KEYS[1], 'e')
if epoch == ARGV[1] then
  redis.call('HSET', KEYS[1], 'e', ARGV[2], 'p', ARGV[1])
  return ARGV[2]
end
return epoch
`)

/**
 * A group's history for reading. KEYS meta, stream; ARGV ttl ms, idle ms, epoch candidate,
 * since epoch ('' for none), since offset, limit, '1' to take a `since` in the epoch before the
 * last renewal as in this one (a renewal keeps the offsets). Oldest first after `since` when it
 * is in this epoch (from the start otherwise), the latest `limit` without `since`.
 * Returns { epoch, latest offset, entries as offset, payload pairs (newest first without since),
 * when the entry at `since` was written (false when none is kept), 1 when `since` was taken from
 * the epoch before the renewal }.
 */
export const readHistory = script(2, `${LIVE_ENTRIES}${epochLua('KEYS[1]', 'KEYS[2]', 'ARGV[3]', 'ARGV[2]')}
local top = tonumber(redis.call('HGET', KEYS[1], 't'))
local oldest = now - tonumber(ARGV[1])
local limit = tonumber(ARGV[6])
local out = {}
if ARGV[4] == '' then
  live(redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', limit), oldest, out)
  return {epoch, top, out}
end
local from = 1
local at = false
local followed = false
if ARGV[4] ~= epoch and ARGV[7] == '1' and ARGV[4] == redis.call('HGET', KEYS[1], 'p') then followed = 1 end
if ARGV[4] == epoch or followed then
  from = tonumber(ARGV[5]) + 1
  local entry = redis.call('XRANGE', KEYS[2], ARGV[5] .. '-0', ARGV[5] .. '-0')
  if #entry > 0 then at = tonumber(entry[1][2][4]) end
end
-- Nothing after a position ahead of the group's (and Lua would write a large one as 1e+15).
if from > top then return {epoch, top, out, at, followed} end
-- Expired entries are the oldest ones: skip them a chunk at a time until \`limit\` live ones are found.
while #out < 2 * limit do
  local chunk = redis.call('XRANGE', KEYS[2], from .. '-0', '+', 'COUNT', limit)
  if #chunk == 0 then break end
  live(chunk, oldest, out)
  from = tonumber(string.match(chunk[#chunk][1], '^%d+')) + 1
end
while #out > 2 * limit do table.remove(out) end
return {epoch, top, out, at, followed}
`)
