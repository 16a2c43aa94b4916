import { InvalidMessageError } from '../errors.js'
import type { LayerMessage } from './types.js'

/**
 * How many containers may nest below the message itself. Recursion is bounded by it, so hostile
 * input (a 100,000-deep object or a cycle) is an InvalidMessageError, never a stack overflow.
 */
export const MAX_MESSAGE_DEPTH = 64

type Key = string | number

// Thrown inside the walk and caught at the top: each container frame adds its key on the way out,
// so the happy path carries no path bookkeeping at all.
class Rejection {
  readonly keys: Key[] = []
  readonly containers: object[] = []
  constructor (readonly reason: string) {}
}

const DEPTH_REASON = `nested deeper than ${MAX_MESSAGE_DEPTH}`

/** Whether a message is a presence announcement (`presenceEvents`), which takes no offset. */
export function isPresenceEvent (type: string): boolean {
  return type === 'presence.join' || type === 'presence.leave'
}

/**
 * Checks `message` against the layer rules and returns a deep copy the layer owns. The caller's
 * object is only read: never mutated, frozen or kept.
 */
export function copyMessage (message: unknown): LayerMessage {
  if (typeof message !== 'object' || message === null || !isPlainPrototype(Object.getPrototypeOf(message))) {
    throw new InvalidMessageError(`message must be a plain object with a string "type", not ${describe(message)}`)
  }
  const type = (message as { type?: unknown }).type
  if (typeof type !== 'string') {
    throw new InvalidMessageError('message.type must be a string')
  }
  // Consumers take these for the layer's own announcements (no offset, a presence list to update).
  if (isPresenceEvent(type)) throw new InvalidMessageError(`message.type "${type}" is reserved for the layer's presence announcements`)
  return checkedCopy(message as Record<string, unknown>, 'message') as LayerMessage
}

/**
 * Checks that `value` is a plain object of layer values (presence info, say) and returns a deep
 * copy; InvalidMessageError names `what` and the bad value's path otherwise.
 */
export function copyPlainObject (value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || !isPlainPrototype(Object.getPrototypeOf(value))) {
    throw new InvalidMessageError(`${what} must be a plain object of layer values, not ${describe(value)}`)
  }
  return checkedCopy(value as Record<string, unknown>, what)
}

/** The deep copy of a plain object the caller checked at the top; InvalidMessageError names `root` and the path. */
function checkedCopy (value: Record<string, unknown>, root: string): Record<string, unknown> {
  try {
    return copyObject(value, 0)
  } catch (err) {
    if (err instanceof Rejection) throw new InvalidMessageError(explain(err, root))
    throw err
  }
}

// Every object and array `share()` froze: what may be encoded once and the text reused. Until a
// first message is shared, nothing is looked up in it: most apps never share one, and a lookup
// for every `sendJson()` cost a call and a hash (about 140 instructions per delivery, measured).
const shared = new WeakSet<object>()
let sharing = false

/**
 * Makes `message` (a copy the layer owns) shareable by every consumer that opted in: deep-frozen,
 * so a handler that writes to it gets a TypeError instead of changing what the others see.
 * Bytes (`Uint8Array`) cannot be frozen and stay as they are.
 */
export function share (message: LayerMessage): LayerMessage {
  freezeDeep(message)
  return message
}

/** Whether `value` is part of a message `share()` froze: it can never change. */
export function isShared (value: unknown): boolean {
  return sharing && typeof value === 'object' && value !== null && shared.has(value)
}

function freezeDeep (value: object): void {
  if (value instanceof Uint8Array || shared.has(value)) return
  sharing = true
  shared.add(value)
  for (const inner of Object.values(value)) if (typeof inner === 'object' && inner !== null) freezeDeep(inner as object)
  Object.freeze(value)
}

/** A deep copy of a value `copyPlainObject()` produced. */
export function clonePlainObject<T extends object> (value: T): T {
  return cloneObject(value as Record<string, unknown>) as T
}

/**
 * Copies a message that `copyMessage()` produced (or that a backend decoded itself). It skips every
 * check, which is why fan-out calls it once per recipient instead of `copyMessage()`.
 */
export function cloneMessage (message: LayerMessage): LayerMessage {
  return cloneObject(message) as LayerMessage
}

export function isPlainPrototype (proto: unknown): boolean {
  return proto === Object.prototype || proto === null
}

function copyValue (value: unknown, depth: number): unknown {
  switch (typeof value) {
    case 'string':
      return wellFormed(value)
    case 'boolean':
      return value
    case 'number':
      // -0 is 0, as every backend's encoding carries it: the layers hand out the same value.
      if (Number.isFinite(value)) return value === 0 ? 0 : value
      throw new Rejection(`${String(value)} is not allowed`)
    case 'object':
      return value === null ? null : copyContainer(value, depth + 1)
    default: // undefined, function, symbol, bigint
      throw new Rejection(`${typeof value} is not allowed`)
  }
}

/**
 * A string as UTF-8 carries it: each lone surrogate (half of a pair, as a slice through an emoji
 * leaves) becomes U+FFFD, as a browser's WebSocket and TextEncoder make it. msgpack, and so the
 * Redis layer, can only carry it so; every layer hands out the same string.
 */
function wellFormed (text: string): string {
  return text.isWellFormed() ? text : text.toWellFormed()
}

function copyContainer (value: object, depth: number): unknown {
  if (depth > MAX_MESSAGE_DEPTH) throw new Rejection(DEPTH_REASON)
  const proto: unknown = Object.getPrototypeOf(value)
  if (isPlainPrototype(proto)) return copyObject(value as Record<string, unknown>, depth)
  if (proto === Array.prototype) return copyArray(value as unknown[], depth)
  // Buffer is a Uint8Array subclass; recipients get a plain Uint8Array with their own bytes.
  if (value instanceof Uint8Array) return new Uint8Array(value)
  throw new Rejection(`${describe(value)} is not allowed`)
}

function copyObject (source: Record<string, unknown>, depth: number): Record<string, unknown> {
  const target: Record<string, unknown> = {}
  const keys = Object.keys(source)
  let i = 0
  // Once a key had a lone surrogate replaced, two keys may become one: refused, not merged.
  let replaced = false
  try {
    for (; i < keys.length; i++) {
      const key = keys[i]
      const name = wellFormed(key)
      if (name !== key) replaced = true
      if (replaced && Object.hasOwn(target, name)) throw new Rejection('two keys that are the same once lone surrogates are replaced')
      setOwn(target, name, copyValue(source[key], depth))
    }
    // JSON and msgpack drop symbol keys silently; refusing them keeps every backend identical.
    if (Object.getOwnPropertySymbols(source).length > 0) throw new Rejection('symbol keys are not allowed')
  } catch (err) {
    if (err instanceof Rejection && i < keys.length) {
      err.keys.push(keys[i])
      err.containers.push(source)
    }
    throw err
  }
  return target
}

function copyArray (source: unknown[], depth: number): unknown[] {
  const target: unknown[] = []
  let i = 0
  try {
    for (; i < source.length; i++) target.push(copyValue(source[i], depth))
  } catch (err) {
    if (err instanceof Rejection) {
      err.keys.push(i)
      err.containers.push(source)
    }
    throw err
  }
  return target
}

// A clone is made per recipient, so it allocates nothing but the copy: an array of exactly the
// source's length (an empty one would grow room for 17 at its first push), and an object spread
// whole (V8 copies an object of a known shape in one step, instead of adding its keys one by one),
// then its nested containers replaced by their clones. The source is a checked copy: no getters,
// no symbol keys, so the spread reads what the checks read.
export function cloneValue (value: unknown): unknown {
  if (typeof value !== 'object' || value === null) return value
  if (Array.isArray(value)) {
    const target = value.slice()
    for (let i = 0; i < target.length; i++) {
      const item: unknown = target[i]
      if (typeof item === 'object' && item !== null) target[i] = cloneValue(item)
    }
    return target
  }
  if (value instanceof Uint8Array) return new Uint8Array(value)
  return cloneObject(value as Record<string, unknown>)
}

function cloneObject (source: Record<string, unknown>): Record<string, unknown> {
  const target: Record<string, unknown> = { ...source }
  for (const key in target) {
    const value = target[key]
    // Own keys only: a key someone made enumerable on Object.prototype is not the message's.
    if (typeof value === 'object' && value !== null && hasOwnProperty.call(target, key)) setOwn(target, key, cloneValue(value))
  }
  return target
}

// Not Object.hasOwn: V8 turns this call, on the object a for…in walks, into a check of its shape.
// Declared in each module that loops so: imported from another, it is not (a member's copy and its
// comparison took 127 → 167 ns in a micro-benchmark).
const hasOwnProperty = Object.prototype.hasOwnProperty

function setOwn (target: Record<string, unknown>, key: string, value: unknown): void {
  // Assigning "__proto__" would replace the prototype; the key must stay ordinary data.
  if (key === '__proto__') {
    Object.defineProperty(target, key, { value, writable: true, enumerable: true, configurable: true })
  } else {
    target[key] = value
  }
}

function describe (value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (typeof value !== 'object') return typeof value
  const ctor = (Object.getPrototypeOf(value) as { constructor?: { name?: unknown } } | null)?.constructor
  return typeof ctor?.name === 'string' && ctor.name !== '' ? ctor.name : 'an object with a custom prototype'
}

function explain (rejection: Rejection, root: string): string {
  const keys = rejection.keys.reverse()
  const containers = rejection.containers.reverse()
  if (rejection.reason === DEPTH_REASON) {
    // A cycle looks like endless depth from inside the walk; name the key that closes it instead.
    for (let i = 1; i < containers.length; i++) {
      if (containers.indexOf(containers[i]) < i) return `${formatPath(root, keys.slice(0, i))}: circular reference`
    }
    const shown = formatPath(root, keys.slice(0, 4))
    return `${keys.length > 4 ? `${shown}…` : shown}: ${rejection.reason}`
  }
  return `${formatPath(root, keys)}: ${rejection.reason}`
}

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/

function formatPath (root: string, keys: readonly Key[]): string {
  let path = root
  for (const key of keys) {
    if (typeof key === 'number') path += `[${key}]`
    else path += IDENTIFIER.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`
  }
  return path
}
