/**
 * One JSON encoding for the members whose copy of a group message is still what was sent.
 *
 * A fan-out gives every member its own copy (Channels' semantics: a handler may change its
 * message), and a JSON consumer then encodes its copy — most often unchanged, so the same text for
 * every member, built once per member. While a fan-out of more than one member runs, the message
 * it copies from is pristine: every member got a copy, none the message itself. A member's
 * content found equal to that message, or to one of its objects, in everything `JSON.stringify`
 * reads — the same own enumerable keys in the same order, the same primitive values, plain
 * prototypes, no `toJSON` — encodes to the same text: it is built for the first such member and
 * reused by the others. Content that differs in anything, and a handler that runs after the
 * fan-out (its connection was busy), is encoded as it is.
 *
 * Only for `JSON.stringify` itself: a consumer's own `encodeJson` may depend on more than the data
 * (time, object identity), so it always runs. The comparison reads values as `JSON.stringify`
 * does, so a getter a handler defines on its copy is read by it (and read again by
 * `JSON.stringify` when something differs).
 *
 * In a fan-out whose message has a compiled structure (message-structure.ts), the members after
 * the first are compared by code compiled for the part they send: the checks of `sameData`,
 * written out for its keys.
 */
import { compileFunction, keyLiteral, keysToWrite, MAX_DEPTH, sameKeysCode, type PartIndex, type Structure } from './message-structure.js'
import { isPlainPrototype } from './message.js'

// The message the running fan-out copies from (undefined outside one), and its structure when
// compiled.
let source: object | undefined
let structure: Structure | undefined

/** A fan-out of `message` starts, every member getting a copy; returns what `leaveFanOut` restores. */
export function enterFanOut (message: object, compiled: Structure | undefined): FanOut {
  const previous = { source, structure }
  source = message
  structure = compiled
  forgetMatches()
  return previous
}

/** What `enterFanOut` returns. */
export interface FanOut { source: object | undefined, structure: Structure | undefined }

/**
 * The fan-out ended (a nested one restores the outer one's message, still untouched, whose
 * members left match it afresh). Nothing of a message is kept past its fan-out.
 */
export function leaveFanOut (previous: FanOut): void {
  source = previous.source
  structure = previous.structure
  forgetMatches()
}

// What the members of the current source have matched so far: the part of the source their
// content equals, its text, and how the next members are compared with it. Forgotten whenever
// the source changes.
let matchedPart: object | undefined
let matchedText = ''
let sameAsMatched: Comparer = sameData
// The source's objects' own keys and values, in order, read once per object and source (the
// source is pristine while its fan-out runs), and the last object asked for.
interface Entries { keys: string[], values: unknown[] }
const entryLists = new Map<object, Entries>()
const NO_ENTRIES: Entries = { keys: [], values: [] }
let lastObject: object | undefined
let lastEntries = NO_ENTRIES

function forgetMatches (): void {
  matchedPart = undefined
  matchedText = ''
  sameAsMatched = sameData
  entryLists.clear()
  lastObject = undefined
  lastEntries = NO_ENTRIES
}

/**
 * `JSON.stringify(content)`, reused from a member before when `content` equals the same part of
 * the message being fanned out; undefined when it cannot be (encode it as usual).
 */
export function encodingOfCopy (content: unknown): string | undefined {
  const from = source
  if (from === undefined || typeof content !== 'object' || content === null) return undefined
  if (matchedPart !== undefined) return sameAsMatched(content, matchedPart) ? matchedText : undefined
  // The first member: which part of the message does it send? The message itself, or one of its
  // objects (`sendJson(event.payload)`).
  let part: object | undefined
  let index: PartIndex = -1
  if (sameData(content, from)) {
    part = from
  } else {
    const values = entriesOf(from).values
    for (let i = 0; i < values.length; i++) {
      const value = values[i]
      if (typeof value === 'object' && value !== null && sameData(content, value)) {
        part = value
        index = i
        break
      }
    }
  }
  if (part === undefined) return undefined
  // Encoded from this member's content, which is equal to the part: the text `JSON.stringify`
  // gives every content equal to it.
  matchedText = JSON.stringify(content)
  matchedPart = part
  const found = part
  if (structure !== undefined) sameAsMatched = structure.part(index, () => comparerFor(found, index < 0 ? 0 : 1)) ?? sameData
  return matchedText
}

function entriesOf (value: object): Entries {
  if (value === lastObject) return lastEntries
  let entries = entryLists.get(value)
  if (entries === undefined) {
    entries = { keys: Object.keys(value), values: Object.values(value) }
    entryLists.set(value, entries)
  }
  lastObject = value
  lastEntries = entries
  return entries
}

/** `sameData`, or the same written out for one structure. */
type Comparer = (content: unknown, original: unknown) => boolean

/** Whether `JSON.stringify` reads the same data in `content` as in `original` (a part of the source). */
function sameData (content: unknown, original: unknown): boolean {
  if (content === original) return typeof content !== 'object' || content === null || noToJson(content)
  if (typeof content !== 'object' || content === null || typeof original !== 'object' || original === null) return false
  if (Array.isArray(original)) {
    if (!Array.isArray(content) || !noToJson(content) || Object.getPrototypeOf(content) !== Array.prototype) return false
    const items = original as unknown[]
    if (content.length !== items.length) return false
    for (let i = 0; i < items.length; i++) {
      if (!sameData(content[i], items[i])) return false
    }
    return true
  }
  // toJSON is read first: V8 then knows the content's shape, and reads its prototype from it.
  if (!noToJson(content) || Object.getPrototypeOf(content) !== Object.prototype) return false
  if (original instanceof Uint8Array) return false
  const { keys, values } = entriesOf(original)
  let i = 0
  for (const key in content) {
    // An inherited enumerable key (a polluted prototype) is not JSON's: leave that content alone.
    if (key !== keys[i] || !hasOwnProperty.call(content, key)) return false
    // The same primitive needs no further look; anything else is compared in depth.
    const value = (content as Record<string, unknown>)[key]
    if ((value !== values[i] || (typeof value === 'object' && value !== null)) && !sameData(value, values[i])) return false
    i++
  }
  return i === keys.length
}

// Not Object.hasOwn: V8 turns this call, on the object a for…in walks, into a check of its shape.
// Declared in each module that loops so: imported from another, it is not (a member's copy and its
// comparison took 127 → 167 ns in a micro-benchmark).
const hasOwnProperty = Object.prototype.hasOwnProperty

function noToJson (value: object): boolean {
  return (value as { toJSON?: unknown }).toJSON === undefined
}

/**
 * `sameData` written out for `part`'s structure (its keys, and which values are objects), for the
 * same part of every message of the fan-out's structure; undefined where it is not compiled
 * (compare generically). `depth`: the part's in the message. Objects are written out exactly as
 * deep as the structure is (MAX_DEPTH), where every message of it has the same keys: what lies
 * deeper may differ from one message to the next, and is compared by `sameData`.
 */
function comparerFor (part: object, depth: number): Comparer | undefined {
  if (Array.isArray(part) || part instanceof Uint8Array) return undefined
  const plan: ComparePlan = { keys: 0, functions: '', count: 0 }
  const root = checkOf(part as Record<string, unknown>, depth, plan)
  if (root === undefined) return undefined
  return compileFunction({ sameData }, `${plan.functions}return ${root}`) as Comparer | undefined
}

interface ComparePlan {
  /** Properties written so far. */
  keys: number
  /** One function per object of the part. */
  functions: string
  count: number
}

/**
 * The name of a function `(content, original)` that checks what `sameData` does against an
 * object of `value`'s structure: no `toJSON`, Object.prototype, the same own keys in the same
 * order, and equal values. Arrays, bytes and deeper objects go to `sameData` itself.
 */
function checkOf (value: Record<string, unknown>, depth: number, plan: ComparePlan): string | undefined {
  const keys = keysToWrite(value, plan)
  if (keys === undefined) return undefined
  let values = ''
  for (const key of keys) {
    const name = keyLiteral(key)
    const item = value[key]
    if (typeof item !== 'object' || item === null) {
      values += ` && c[${name}] === o[${name}]`
    } else {
      const nested = depth < MAX_DEPTH && isPlainPrototype(Object.getPrototypeOf(item)) ? checkOf(item as Record<string, unknown>, depth + 1, plan) : 'sameData'
      if (nested === undefined) return undefined
      values += ` && ${nested}(c[${name}], o[${name}])`
    }
  }
  const fn = `same${++plan.count}`
  plan.functions += `function ${fn} (c, o) {
if (typeof c !== 'object' || c === null || c.toJSON !== undefined || Object.getPrototypeOf(c) !== Object.prototype) return false
${sameKeysCode('c', keys)}return true${values}
}
`
  return fn
}
