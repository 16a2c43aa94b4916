/**
 * What processes sharing a layer say to each other, and how it is written: msgpack (`msgpackr`),
 * so bytes and nested objects cross processes exactly and a message arrives in the same shape the
 * in-memory layer hands out.
 *
 * An envelope is a small array whose first element says what it carries:
 *
 *   [GROUP, message]                             on a group's route: a group message
 *   [DISCARD, channel]                           on a group's route: the owner drops that member,
 *                                                in order with the group's messages
 *   [DIRECT, channel, message]                   on a process' inbox: a message for one of its channels
 *   [REQUEST, id, replyToken, op, group, channel] on a process' inbox: a change only the owner can make
 *   [REPLY, id, code, reason]                    on a process' inbox: '' code when the request succeeded
 *   [FLUSH, senderToken]                         on the broadcast route: forget everything local
 */
import { Packr, Unpackr } from 'msgpackr'
import { InvalidMessageError } from '../../errors.js'
import { MAX_MESSAGE_DEPTH } from '../message.js'
import type { LayerMessage } from '../types.js'

// No records extension: every payload decodes on its own, whichever process packed the one before.
const packr = new Packr({ useRecords: false })
// Maps, not objects: msgpackr renames a "__proto__" key while building objects; reviving the
// Map ourselves keeps that key as plain data, exactly as the in-memory layer copies it.
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: false })

export const Envelope = {
  group: 0,
  discard: 1,
  direct: 2,
  request: 3,
  reply: 4,
  flush: 5
} as const

export function encodeEnvelope (envelope: readonly unknown[]): Buffer {
  return packr.pack(envelope)
}

/** Decodes an envelope; undefined for anything a layer did not write. */
export function decodeEnvelope (payload: Buffer): unknown[] | undefined {
  try {
    const envelope: unknown = unpackr.unpack(payload)
    return Array.isArray(envelope) && typeof envelope[0] === 'number' ? envelope : undefined
  } catch {
    return undefined
  }
}

export function encodeMessage (message: LayerMessage): Buffer {
  return packr.pack(message)
}

export function decodeMessage (payload: Buffer): LayerMessage {
  return reviveMessage(unpackr.unpack(payload))
}

/**
 * Turns a decoded message value (Maps and Buffers) into the layer's message shape: plain objects
 * and plain `Uint8Array`s with their own bytes. Throws InvalidMessageError on anything a layer
 * could not have sent.
 */
export function reviveMessage (value: unknown): LayerMessage {
  const message = revive(value, 0)
  if (typeof message !== 'object' || message === null || Array.isArray(message) || message instanceof Uint8Array ||
    typeof (message as { type?: unknown }).type !== 'string') {
    throw new InvalidMessageError('not a channel layer message')
  }
  return message as LayerMessage
}

function revive (value: unknown, depth: number): unknown {
  if (typeof value !== 'object' || value === null) return value
  if (depth > MAX_MESSAGE_DEPTH + 1) throw new InvalidMessageError('message nested too deep')
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
  throw new InvalidMessageError('unexpected value in message')
}
