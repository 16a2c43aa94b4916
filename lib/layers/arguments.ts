/**
 * What the layer facade checks beyond names (names.ts) and messages (message.ts): the layer's own
 * options, and the arguments of `groupAdd()` and `history()`. Each refusal is a typed error.
 */
import { InvalidMessageError, InvalidOptionError } from '../errors.js'
import { copyPlainObject } from './message.js'
import { encodeValue } from './codec.js'
import type { GroupAddOptions, HistoryOptions, LayerLogger, PresenceInfo, StreamPosition } from './types.js'

/** Presence info may take this many bytes encoded. */
export const MAX_PRESENCE_BYTES = 1024
const DEFAULT_HISTORY_LIMIT = 100_000

/** A checked `groupAdd()` request. */
export interface JoinRequest {
  since: StreamPosition | undefined
  presence: PresenceInfo | undefined
}

/** The longest delay a Node timer keeps (ms): a longer one fires after 1 ms instead. */
export const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * The longest a layer keeps anything, in seconds (ten years): a message's `expiry`, a membership's
 * `groupExpiry`, a history's `ttl`. Longer would overflow what Redis takes (a deadline in 16
 * digits of milliseconds, PEXPIRE's range), and no layer should differ on what it accepts.
 */
export const MAX_SECONDS = 315_360_000

/**
 * A layer option that must be a positive number (or integer), at most `max`; `fallback` when
 * unset. An option that becomes a timer's delay takes `max` from MAX_TIMER_MS.
 */
export function positiveOption (name: string, value: unknown, fallback: number, integer: boolean, max = Infinity): number {
  if (value === undefined) return fallback
  const ok = typeof value === 'number' && Number.isFinite(value) && value > 0 && value <= max && (!integer || Number.isInteger(value))
  if (!ok) {
    throw new InvalidOptionError(`Channel layer option "${name}" must be a positive ${integer ? 'integer' : 'number'}` +
      `${max < Infinity ? ` of at most ${max}` : ''}, got ${typeof value === 'number' ? String(value) : typeof value}`)
  }
  return value
}

export function checkLogger (log: unknown): LayerLogger | undefined {
  if (log === undefined) return undefined
  const methods = log as Partial<Record<keyof LayerLogger, unknown>> | null
  if (typeof methods !== 'object' || methods === null ||
    typeof methods.warn !== 'function' || typeof methods.debug !== 'function' || typeof methods.error !== 'function') {
    throw new InvalidOptionError('Channel layer option "log" must be a logger with warn, debug and error methods')
  }
  return log as LayerLogger
}

/**
 * Refuses option names that are not in `known` (nor in `unlisted`, names taken but not offered in
 * the message): a misspelt one would be ignored silently (a misspelt `url` runs the layer on the
 * default Redis, a misspelt `presence` records none).
 */
export function refuseUnknownOptions (what: string, options: object, known: Readonly<Record<string, true>>, unlisted: readonly string[] = []): void {
  const unknown = Object.keys(options).filter(key => !Object.hasOwn(known, key) && !unlisted.includes(key))
  if (unknown.length === 0) return
  throw new InvalidOptionError(`${what}: unknown option${unknown.length > 1 ? 's' : ''} ${unknown.map(key => `"${key}"`).join(', ')}; ` +
    `the options are ${Object.keys(known).join(', ')}`)
}

const JOIN_OPTIONS: Record<keyof GroupAddOptions, true> = { since: true, presence: true }
const HISTORY_OPTIONS: Record<keyof HistoryOptions, true> = { since: true, limit: true }

function checkPosition (value: unknown, what: string): StreamPosition {
  const { offset, epoch } = (typeof value === 'object' && value !== null ? value : {}) as Partial<StreamPosition>
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0 ||
    typeof epoch !== 'string' || epoch.length === 0 || epoch.length > 100) {
    throw new InvalidOptionError(`${what} must be a position { offset: integer >= 0, epoch: string }`)
  }
  return { offset, epoch }
}

export function checkJoin (options: GroupAddOptions | undefined): JoinRequest {
  if (options === undefined) return { since: undefined, presence: undefined }
  if (typeof options !== 'object' || options === null) throw new InvalidOptionError('groupAdd() options must be an object')
  refuseUnknownOptions('groupAdd()', options, JOIN_OPTIONS)
  const since = options.since === undefined ? undefined : checkPosition(options.since, 'groupAdd() option "since"')
  let presence: PresenceInfo | undefined
  if (options.presence !== undefined) {
    presence = copyPlainObject(options.presence, 'presence') as PresenceInfo
    const size = encodeValue(presence).length
    if (size > MAX_PRESENCE_BYTES) throw new InvalidMessageError(`presence info takes ${size} bytes encoded; at most ${MAX_PRESENCE_BYTES}`)
  }
  return { since, presence }
}

export function checkHistoryOptions (options: HistoryOptions | undefined): { since: StreamPosition | undefined, limit: number } {
  if (options === undefined) return { since: undefined, limit: DEFAULT_HISTORY_LIMIT }
  if (typeof options !== 'object' || options === null) throw new InvalidOptionError('history() options must be an object')
  refuseUnknownOptions('history()', options, HISTORY_OPTIONS)
  const since = options.since === undefined ? undefined : checkPosition(options.since, 'history() option "since"')
  const limit = options.limit ?? DEFAULT_HISTORY_LIMIT
  if (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 1) {
    throw new InvalidOptionError(`history() option "limit" must be a positive integer, got ${String(limit)}`)
  }
  return { since, limit }
}
