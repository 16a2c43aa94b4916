/**
 * Group history in this process, for the in-memory layer: per group with a history policy, its
 * epoch, its latest offset and its last `size` messages for `ttl`. The position of an idle group
 * is remembered for `idleMs` (the layer's `groupExpiry`, at least `ttl`); after that, or after a
 * flush, the group starts again at offset 1 in a new epoch, so a `since` from before can no longer
 * be mistaken for a complete recovery.
 */
import { randomBytes } from 'node:crypto'
import { cloneMessage } from './message.js'
import type { Policy } from './policies.js'
import type { GroupHistory, LayerMessage, StreamPosition } from './types.js'

interface Entry {
  offset: number
  /** The layer's own copy: handed out only as clones. */
  message: LayerMessage
  /** performance.now() when it was sent. */
  at: number
}

interface Stream {
  epoch: string
  top: number
  /** Oldest first; `head` is the first live one. */
  entries: Array<Entry | undefined>
  head: number
  /** Last send, join or read, for forgetting idle groups. */
  touched: number
  /** How long it is remembered once idle: `idleMs`, or the policy's `ttl` when that is longer. */
  keepMs: number
}

export type HistoryPolicy = NonNullable<Policy['history']>

/** What a `since` asks for: the entries after it, and whether they are all there. */
export interface Recovery {
  position: StreamPosition
  entries: Array<{ message: LayerMessage, offset: number }>
  complete: boolean
}

/** How long an idle group's position is remembered: the layer's `groupExpiry`, at least the history's `ttl`. */
export function idleMsOf (history: HistoryPolicy, groupExpiryMs: number): number {
  return Math.max(history.ttlMs, groupExpiryMs)
}

export function newEpoch (): string {
  return randomBytes(6).toString('base64url')
}

export class MemoryHistory {
  readonly #streams = new Map<string, Stream>()
  readonly #idleMs: number

  constructor (idleMs: number) {
    this.#idleMs = idleMs
  }

  /** Records a message (the layer keeps its own copy) and returns its position. */
  append (group: string, policy: HistoryPolicy, message: LayerMessage): StreamPosition {
    const now = performance.now()
    const stream = this.#stream(group, policy, now)
    stream.top++
    stream.entries.push({ offset: stream.top, message: cloneMessage(message), at: now })
    if (stream.entries.length - stream.head > policy.size) stream.entries[stream.head++] = undefined
    compact(stream)
    return { offset: stream.top, epoch: stream.epoch }
  }

  /** The group's latest position; a group without any yet gets its epoch now, at offset 0. */
  position (group: string, policy: HistoryPolicy): StreamPosition {
    const stream = this.#stream(group, policy, performance.now())
    return { offset: stream.top, epoch: stream.epoch }
  }

  /** The messages after `since` (clones), and whether the history still holds every one of them. */
  recover (group: string, policy: HistoryPolicy, since: StreamPosition): Recovery {
    const stream = this.#stream(group, policy, performance.now())
    const position = { offset: stream.top, epoch: stream.epoch }
    if (since.epoch !== stream.epoch || since.offset > stream.top) return { position, entries: [], complete: false }
    const entries = this.#after(stream, since.offset, Infinity)
    const first = entries.length > 0 ? entries[0].offset : stream.top + 1
    return { position, entries, complete: first === since.offset + 1 }
  }

  /**
   * `layer.history()`: oldest first; after `since` when its epoch is current, else from the start.
   * A read is a use: the group's position is kept for `idleMs` from it, as on Redis.
   */
  read (group: string, policy: HistoryPolicy, since: StreamPosition | undefined, limit: number): GroupHistory {
    const stream = this.#stream(group, policy, performance.now())
    const from = since !== undefined && since.epoch === stream.epoch ? since.offset : 0
    const messages = since === undefined
      ? this.#after(stream, 0, Infinity).slice(-limit)
      : this.#after(stream, from, limit)
    return { messages, position: { offset: stream.top, epoch: stream.epoch } }
  }

  /** Every group loses its history: the next position of each is in a new epoch. */
  flush (): void {
    this.#streams.clear()
  }

  /** Forgets groups idle for longer than `idleMs` (or their `ttl`). */
  sweep (now = performance.now()): void {
    for (const [group, stream] of this.#streams) {
      if (now - stream.touched > stream.keepMs) this.#streams.delete(group)
    }
  }

  /** Groups with a remembered position: for leak checks. */
  get size (): number {
    return this.#streams.size
  }

  #stream (group: string, policy: HistoryPolicy, now: number): Stream {
    let stream = this.#streams.get(group)
    if (stream !== undefined && now - stream.touched > stream.keepMs) {
      this.#streams.delete(group)
      stream = undefined
    }
    const keepMs = idleMsOf(policy, this.#idleMs)
    if (stream === undefined) {
      stream = { epoch: newEpoch(), top: 0, entries: [], head: 0, touched: now, keepMs }
      this.#streams.set(group, stream)
    }
    stream.touched = now
    stream.keepMs = keepMs
    this.#dropExpired(stream, policy, now)
    return stream
  }

  #dropExpired (stream: Stream, policy: HistoryPolicy, now: number): void {
    const { entries } = stream
    while (stream.head < entries.length && (entries[stream.head] as Entry).at + policy.ttlMs <= now) entries[stream.head++] = undefined
    compact(stream)
  }

  #after (stream: Stream, offset: number, limit: number): Array<{ message: LayerMessage, offset: number }> {
    const out: Array<{ message: LayerMessage, offset: number }> = []
    const { entries } = stream
    const first = stream.head < entries.length ? (entries[stream.head] as Entry).offset : stream.top + 1
    // Offsets are consecutive in the ring: the one after `offset` is found by arithmetic.
    for (let i = stream.head + Math.max(0, offset + 1 - first); i < entries.length && out.length < limit; i++) {
      const entry = entries[i] as Entry
      out.push({ message: cloneMessage(entry.message), offset: entry.offset })
    }
    return out
  }
}

function compact (stream: Stream): void {
  if (stream.head === stream.entries.length) {
    stream.entries.length = 0
    stream.head = 0
  } else if (stream.head >= 1024 && stream.head * 2 >= stream.entries.length) {
    stream.entries.splice(0, stream.head)
    stream.head = 0
  }
}
