/**
 * What the Redis layer puts on the wire: msgpack (`msgpackr`), so bytes and nested objects cross
 * processes exactly, and a message arrives in the same shape the in-memory layer hands out.
 */
import { Packr, Unpackr } from 'msgpackr'
import { MAX_MESSAGE_DEPTH } from './message.js'
import type { LayerMessage } from './types.js'

// No records extension: every frame decodes on its own, whichever process packed the one before.
const packr = new Packr({ useRecords: false })
// Maps, not objects: msgpackr renames a "__proto__" key while building objects; reviving the
// Map ourselves keeps that key as plain data, exactly as the in-memory layer copies it.
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: false })

/** Pub/sub frames are small arrays whose first element says what they carry. */
export const Frame = {
  /** On a group channel: `[GROUP, message]`. */
  group: 0,
  /** On a group channel: `[DISCARD, channel]`, the owner drops that member (ordered with messages). */
  discard: 1,
  /** On a process inbox: `[DIRECT, channel, message]`. */
  direct: 2,
  /** On a process inbox: `[REQUEST, id, replyToken, op, group, channel]`. */
  request: 3,
  /** On a process inbox: `[REPLY, id, error]` (error '' when the request succeeded). */
  reply: 4,
  /** On the broadcast channel: `[FLUSH, senderToken]`. */
  flush: 5
} as const

export function encodeFrame (frame: readonly unknown[]): Buffer {
  return packr.pack(frame)
}

/** Decodes a pub/sub frame; undefined for anything this layer did not write. */
export function decodeFrame (payload: Buffer): unknown[] | undefined {
  try {
    const frame: unknown = unpackr.unpack(payload)
    return Array.isArray(frame) && typeof frame[0] === 'number' ? frame : undefined
  } catch {
    return undefined
  }
}

/**
 * Turns a decoded message value (Maps and Buffers) into the layer's message shape: plain objects
 * and plain `Uint8Array`s with their own bytes. Throws on anything a layer could not have sent.
 */
export function reviveMessage (value: unknown): LayerMessage {
  const message = revive(value, 0)
  if (typeof message !== 'object' || message === null || Array.isArray(message) || message instanceof Uint8Array ||
    typeof (message as { type?: unknown }).type !== 'string') {
    throw new TypeError('not a channel layer message')
  }
  return message as LayerMessage
}

function revive (value: unknown, depth: number): unknown {
  if (typeof value !== 'object' || value === null) return value
  if (depth > MAX_MESSAGE_DEPTH + 1) throw new TypeError('message nested too deep')
  if (value instanceof Uint8Array) return new Uint8Array(value)
  if (Array.isArray(value)) {
    const out: unknown[] = new Array(value.length)
    for (let i = 0; i < value.length; i++) out[i] = revive(value[i], depth + 1)
    return out
  }
  if (value instanceof Map) {
    const out: Record<string, unknown> = {}
    for (const [key, inner] of value) {
      const name = String(key)
      const revived = revive(inner, depth + 1)
      if (name === '__proto__') {
        Object.defineProperty(out, name, { value: revived, writable: true, enumerable: true, configurable: true })
      } else {
        out[name] = revived
      }
    }
    return out
  }
  throw new TypeError('unexpected value in message')
}

// Queue elements: a fixed-width expiry deadline (Redis server time, ms) in ASCII, then the message.
// The Lua scripts read the deadline with string.sub, so the width is part of the protocol.
export const DEADLINE_WIDTH = 16

export function encodeMessage (message: LayerMessage): Buffer {
  return packr.pack(message)
}

/** The expiry deadline of a queue element (server ms), or NaN for a malformed one. */
export function queueDeadline (element: Buffer): number {
  return Number(element.toString('latin1', 0, DEADLINE_WIDTH))
}

export function decodeQueueElement (element: Buffer): LayerMessage {
  return reviveMessage(unpackr.unpack(element.subarray(DEADLINE_WIDTH)))
}
