/**
 * The layer's encoding: msgpack (`msgpackr`), so bytes and nested objects cross processes exactly
 * and a message arrives in the same shape the in-memory layer hands out; and the envelopes in
 * which processes sharing a layer speak to each other (cluster.ts).
 *
 * An envelope is a small array whose first element says what it carries:
 *
 *   [GROUP, message, offset?, epoch?]            on a group's route: a group message, with its
 *                                                position when the group keeps history
 *   [DISCARD, channel]                           on a group's route: the owner drops that member,
 *                                                in order with the group's messages
 *   [DIRECT, channel, message]                   on a process' inbox: a message for one of its channels
 *   [REQUEST, id, replyToken, op, group, channel, since, presence]
 *                                                on a process' inbox: a change only the owner can make
 *   [REPLY, id, code, reason, result]            on a process' inbox: '' code when the request succeeded
 *   [FLUSH, senderToken]                         on the broadcast route: forget everything local
 */
import { Packr, Unpackr } from 'msgpackr'
import { InvalidMessageError } from '../errors.js'
import { MAX_MESSAGE_DEPTH } from './message.js'
import type { Delivery, LayerMessage, Received } from './types.js'
import type { PayloadCipher } from './encryption.js'

// No records extension: every payload decodes on its own, whichever process packed the one before.
const packr = new Packr({ useRecords: false })
// Maps, not objects: msgpackr renames a "__proto__" key while building objects; reviving the
// Map ourselves keeps that key as plain data, exactly as the in-memory layer copies it.
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: false })

/**
 * Payloads this process could not open, by the errors that said so. `elsewhere`: another process
 * may open it (sealed with a key this one lacks, or sealed where this one seals nothing, or the
 * reverse); otherwise it names a key this process has and fails it (changed since). `reported`:
 * counted and warned about (throttled) already, so a path that meets it logs nothing of its own.
 */
const unopened = new WeakMap<object, { elsewhere: boolean, reported: boolean }>()

/** What `err` says of a payload this process could not open; undefined for any other error. */
export function unopenedHere (err: unknown): { elsewhere: boolean, reported: boolean } | undefined {
  return typeof err === 'object' && err !== null ? unopened.get(err) : undefined
}

export const Envelope = {
  group: 0,
  discard: 1,
  direct: 2,
  request: 3,
  reply: 4,
  flush: 5,
  fence: 6
} as const

/**
 * How processes sharing a layer write to their backend: the envelopes above, messages with their
 * delivery (in queues) and plain values (presence info), each sealed when the layer encrypts
 * (encryption.ts). A sealed payload is a msgpack bin, so what a backend appends after it (a
 * position) still decodes apart. What no key opens is reported through `undecryptable` and
 * treated as unreadable.
 */
export class WireCodec {
  readonly #cipher: PayloadCipher | undefined
  readonly #undecryptable: () => void

  constructor (cipher?: PayloadCipher, undecryptable: () => void = () => {}) {
    this.#cipher = cipher
    this.#undecryptable = undecryptable
  }

  encodeEnvelope (envelope: readonly unknown[]): Buffer {
    return this.#seal(packr.pack(envelope))
  }

  /**
   * Decodes an envelope; undefined for anything a layer did not write, null for a sealed payload
   * no key opens (counted and reported already). A backend may append more
   * values to a payload it publishes (a group message's position, stamped where the offset is
   * assigned): they come after the envelope's own elements.
   */
  decodeEnvelope (payload: Buffer): unknown[] | null | undefined {
    let values: unknown[]
    try {
      values = unpackr.unpackMultiple(payload) as unknown[]
    } catch {
      return undefined
    }
    let envelope = values[0]
    if (this.#cipher !== undefined) {
      if (!(envelope instanceof Uint8Array)) return undefined
      const plain = this.#open(envelope)
      if (plain === undefined) return null
      try {
        envelope = unpackr.unpack(plain)
      } catch {
        return undefined
      }
    }
    if (!Array.isArray(envelope) || typeof envelope[0] !== 'number') return undefined
    for (let i = 1; i < values.length; i++) {
      const more = values[i]
      if (Array.isArray(more)) envelope.push(...(more as unknown[]))
      else envelope.push(more)
    }
    return envelope as unknown[]
  }

  /** A message with how it came, as a queue keeps it: `[message]`, or `[message, [group, offset?, epoch?]]`. */
  encodeDelivery (message: LayerMessage, info: Delivery): Buffer {
    const how = info.group === undefined ? undefined : info.offset === undefined ? [info.group] : [info.group, info.offset, info.epoch]
    return this.#seal(packr.pack(how === undefined ? [message] : [message, how]))
  }

  /** A group message as the group's history keeps it (its envelope). */
  decodeStored (payload: Buffer): LayerMessage {
    const envelope = this.decodeEnvelope(payload)
    if (envelope === null || envelope === undefined) {
      const first = firstValue(payload)
      // Sealed where this process seals nothing, or the reverse: another process' configuration.
      if (envelope === null || (this.#cipher === undefined ? first instanceof Uint8Array : Array.isArray(first))) throw this.#unopened(first)
    }
    return reviveMessage(envelope?.[1])
  }

  /**
   * A message with how it came, from a queue. `queued`: a named channel's, which another process
   * may take instead; one sealed with a key this process lacks is then left to it, not dropped,
   * and so not counted as undecryptable.
   */
  decodeDelivery (payload: Buffer, queued = false): Received {
    const decoded = this.#unpack(payload, queued)
    if (!Array.isArray(decoded)) throw new InvalidMessageError('malformed delivery')
    const [message, how] = decoded as [unknown, unknown]
    if (!Array.isArray(how)) return { message: reviveMessage(message), info: {} }
    const [group, offset, epoch] = how as [unknown, unknown, unknown]
    if (typeof group !== 'string') throw new InvalidMessageError('malformed delivery')
    const info: Delivery = typeof offset === 'number' && typeof epoch === 'string' ? { group, offset, epoch } : { group }
    return { message: reviveMessage(message), info }
  }

  /** A plain object of layer values (presence info). */
  encodeValue (value: object): Buffer {
    return this.#seal(encodeValue(value))
  }

  decodeObject (payload: Buffer): Record<string, unknown> {
    return reviveObject(this.#unpack(payload))
  }

  #seal (plain: Buffer): Buffer {
    return this.#cipher === undefined ? plain : packr.pack(this.#cipher.seal(plain))
  }

  #open (sealed: Uint8Array, queued = false): Buffer | undefined {
    const plain = this.#cipher?.open(sealed)
    if (plain === undefined && !(queued && this.#sealedElsewhere(sealed))) this.#undecryptable()
    return plain
  }

  /** Sealed with a key this process lacks (not changed since: that names a key it has). */
  #sealedElsewhere (sealed: Uint8Array): boolean {
    return this.#cipher?.hasKeyFor(sealed) === false
  }

  #unpack (payload: Buffer, queued = false): unknown {
    if (this.#cipher === undefined) {
      // No payload this layer writes unsealed is bytes alone: this one was sealed elsewhere.
      const value: unknown = unpackr.unpack(payload)
      if (value instanceof Uint8Array) throw this.#unopened(value)
      return value
    }
    const sealed: unknown = unpackr.unpack(payload)
    const plain = sealed instanceof Uint8Array ? this.#open(sealed, queued) : undefined
    if (plain === undefined) throw this.#unopened(sealed, queued)
    return unpackr.unpack(plain)
  }

  /** The error for a payload this process cannot open: `sealed`, what it holds where a seal would be. */
  #unopened (sealed: unknown, queued = false): Error {
    const err = new InvalidMessageError(this.#cipher === undefined ? 'a sealed payload, and this layer has no encryption keys' : 'a payload no encryption key opens')
    // Only a seal this process tried to open was counted and reported (#open), unless left to others.
    const tried = this.#cipher !== undefined && sealed instanceof Uint8Array
    const elsewhere = !tried || this.#sealedElsewhere(sealed)
    unopened.set(err, { elsewhere, reported: tried && !(queued && elsewhere) })
    return err
  }
}

/** The first value of a payload, or undefined when it does not decode. */
function firstValue (payload: Buffer): unknown {
  try {
    return unpackr.unpackMultiple(payload)[0]
  } catch {
    return undefined
  }
}

/** Encodes a plain object of layer values, unsealed: what the presence size limit measures. */
export function encodeValue (value: object): Buffer {
  return packr.pack(value)
}

/** A plain object from a decoded value (an element of an envelope); InvalidMessageError otherwise. */
export function reviveObject (value: unknown): Record<string, unknown> {
  const revived = revive(value, 0)
  if (typeof revived !== 'object' || revived === null || Array.isArray(revived) || revived instanceof Uint8Array) {
    throw new InvalidMessageError('not a plain object')
  }
  return revived as Record<string, unknown>
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
