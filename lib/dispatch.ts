/**
 * Dispatch of layer messages by `type`, shared by WebSocket consumers and background workers.
 *
 * `'chat.message'` → `chatMessage()`, falling back to Django's `chat_message()`. Types starting
 * with `_`, and names that belong to the base classes or to `Object.prototype`, are never
 * dispatched: a message must not be able to call `close`, `send`, `constructor` or `toString`.
 */
import type { Delivery } from './layers/types.js'
export { isPresenceEvent } from './layers/message.js'

export type MessageHandler = (message: object, info: Delivery) => unknown

const objectNames = new Set<string>(Object.getOwnPropertyNames(Object.prototype))
// The names each base class reserves: its prototype's own names and the instance fields it sets.
const reservedBy = new WeakMap<object, Set<string>>()

/** Marks every name on a base class prototype (and the given instance fields) as not dispatchable in its subclasses. */
export function reserveNames (proto: object, fields: readonly string[] = []): void {
  reservedBy.set(proto, new Set([...Object.getOwnPropertyNames(proto), ...fields]))
}

/**
 * Whether `name` belongs to one of the base classes `proto` inherits from, or to
 * `Object.prototype`, so no message may call it. A worker may have a `send()` handler: `send` is
 * a consumer's method, not one of `ChannelConsumer`'s.
 */
export function isReservedName (name: string, proto: object): boolean {
  if (objectNames.has(name)) return true
  for (let base: object | null = proto; base !== null; base = Object.getPrototypeOf(base) as object | null) {
    if (reservedBy.get(base)?.has(name) === true) return true
  }
  return false
}

/**
 * A consumer may route layer messages itself, before dispatch by type. GroupsConsumer does: the
 * messages of the groups its client joined are forwarded whatever their type, so a type can
 * never select one of its methods (an action, say). Returns the handler, or undefined for none.
 */
export const kRoute = Symbol('fastify-channels.route')

interface Routing {
  [kRoute]: (type: string, info: Delivery) => MessageHandler | undefined
}

const NO_INFO: Delivery = Object.freeze({})

/** The handler for a layer message: the consumer's own routing if it has one, else by type. */
export function findHandler (target: object, type: string, info: Delivery | undefined = undefined): MessageHandler | undefined {
  const route = (target as Partial<Routing>)[kRoute]
  if (route !== undefined) return route.call(target, type, info ?? NO_INFO)
  return findHandlerByType(target, type)
}

const cache = new WeakMap<object, Map<string, string | null>>()

/** The method names a type may resolve to, in the order they are tried. */
export function handlerNames (type: string): string[] {
  if (type.length === 0 || type[0] === '_') return []
  const parts = type.split(/[._]/).filter(part => part.length > 0)
  if (parts.length === 0) return []
  const camel = parts[0] + parts.slice(1).map(p => p[0].toUpperCase() + p.slice(1)).join('')
  const snake = type.replaceAll('.', '_')
  // '.grant.admin' would be '_grant_admin': a name starting with _ is never a handler.
  if (snake[0] === '_') return [camel]
  return camel === snake ? [camel] : [camel, snake]
}

/**
 * What a "no handler" warning says of `type` on `target`: the methods that would handle it, or why
 * none may (a private or empty type, a name a base class or `Object.prototype` reserves).
 */
export function missingHandlerHint (target: object, type: string): string {
  const names = handlerNames(type)
  if (names.length === 0) return 'a type that is empty or starts with _ is never dispatched'
  const reserved = names.find(name => isReservedName(name, Object.getPrototypeOf(target) as object))
  if (reserved !== undefined) return `${reserved} is a name the consumer's base class reserves: it is never a handler`
  return `define ${names.map(name => `${name}()`).join(' or ')}`
}

/** Finds the handler `type` names on `target`, or undefined when none may be called. */
export function findHandlerByType (target: object, type: string): MessageHandler | undefined {
  // Kept this small so that V8 inlines it where the consumer was just read: knowing its class
  // there, it reads the prototype directly instead of calling into the runtime per delivery.
  const proto = Object.getPrototypeOf(target) as object
  // A fan-out asks for one type on one class, member after member: the last answer first.
  let name: string | null
  if (proto === lastProto && type === lastType) {
    name = lastName
    // The same text in another string (each message decoded from Redis brings its own): kept, so
    // that the next members compare the same string, at once, instead of character by character.
    lastType = type
  } else {
    name = nameFor(proto, type)
  }
  return name !== null ? (target as Record<string, MessageHandler>)[name] : ownHandler(target, type)
}

/** A handler assigned as an instance field (an arrow function): found too, but not cached. */
function ownHandler (target: object, type: string): MessageHandler | undefined {
  for (const candidate of handlerNames(type)) {
    if (!Object.hasOwn(target, candidate) || isReservedName(candidate, target)) continue
    const value = (target as Record<string, unknown>)[candidate]
    if (typeof value === 'function') return value as MessageHandler
  }
  return undefined
}

// The last class and type findHandlerByType answered for, and the method name it found (or null).
let lastProto: object | undefined
let lastType = ''
let lastName: string | null = null

/**
 * What `proto` or a prototype it inherits from holds as `name`, read without running a getter: a
 * type naming an accessor (`signal`, which needs a connection) is not a handler, and must not throw.
 */
function methodOf (proto: object | null, name: string): unknown {
  for (; proto !== null; proto = Object.getPrototypeOf(proto) as object | null) {
    const descriptor = Object.getOwnPropertyDescriptor(proto, name)
    if (descriptor !== undefined) return descriptor.value
  }
  return undefined
}

/** The method of `proto` that `type` names, or null; remembered per class. */
function nameFor (proto: object, type: string): string | null {
  let byType = cache.get(proto)
  if (byType === undefined) {
    byType = new Map()
    cache.set(proto, byType)
  }
  let name = byType.get(type)
  if (name === undefined) {
    name = null
    for (const candidate of handlerNames(type)) {
      if (!isReservedName(candidate, proto) && typeof methodOf(proto, candidate) === 'function') {
        name = candidate
        break
      }
    }
    // Bound the cache: types come from the network, a flood of distinct ones must not grow memory.
    if (byType.size < 1000) byType.set(type, name)
  }
  lastProto = proto
  lastType = type
  lastName = name
  return name
}
