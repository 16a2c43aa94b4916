/**
 * A message's structure — its keys in order, and which values are objects — and the code compiled
 * for it, for what a fan-out does once per member.
 *
 * - A member's copy (Channels' semantics: a handler may change its message). Copied generically
 *   (message.ts), every copy walks the message's keys again and stores each value through a site
 *   that sees every shape of the app, so V8 looks each one up. Compiled, a copy is the structure
 *   written out as object literals — for `{ type, payload: { s, g } }`,
 *   `{ "type": m["type"], "payload": { "s": v1["s"], "g": v1["g"] } }` — which V8 builds as one
 *   allocation per object, of one shape, from loads of known shapes.
 * - The comparison of a member's copy with the message or one of its objects, to reuse its JSON
 *   (copy-encoding.ts compiles it; the structure keeps it, per part).
 *
 * A fan-out's message is first checked against the last structure found, by compiled code that
 * walks its keys and builds nothing; only a message of another structure has its code written out
 * and looked up. The code is used only while the message stays as it is: it is pristine while its
 * fan-out runs (every member gets a copy, none the message).
 *
 * - A structure is compiled the second time it comes, and kept: a structure is most often the
 *   app's code, not its data, so an app has few, and one that came once (keys made of data) is
 *   not compiled.
 * - Past MAX_STRUCTURES, MAX_KEYS or MAX_CODE, for a message with a `__proto__` key (which a
 *   literal would read as its prototype), and where the process forbids code generation
 *   (`--disallow-code-generation-from-strings`), the walks are the generic ones.
 * - Keys enter the code only as JSON string literals (`keyLiteral`), every one a valid JavaScript
 *   string literal; nothing else of a message does. Arrays, bytes and objects nested deeper than
 *   MAX_DEPTH are walked generically from inside the compiled code.
 */
import { cloneValue, isPlainPrototype } from './message.js'
import type { LayerMessage } from './types.js'

/** Properties one structure is written out for at most; a larger message is walked generically. */
const MAX_KEYS = 64
/** How deep objects are written out. */
export const MAX_DEPTH = 4
const MAX_CODE = 8192
const MAX_STRUCTURES = 256

/** A part of the message (-1: the message itself, else the index of one of its keys). */
export type PartIndex = number

export class Structure {
  readonly #parts = new Map<PartIndex, unknown>()

  constructor (
    /** A member's copy of a message of this structure. */
    readonly clone: (message: LayerMessage) => LayerMessage,
    /** Whether `message` has this structure. */
    readonly matches: (message: object) => boolean
  ) {}

  /** What `make` compiles for one part of messages of this structure, made once. */
  part<F> (index: PartIndex, make: () => F | undefined): F | undefined {
    if (this.#parts.has(index)) return this.#parts.get(index) as F | undefined
    const made = make()
    this.#parts.set(index, made)
    return made
  }
}

const structures = new Map<string, Structure>()
// Structures seen once, not compiled yet; forgotten all at once when full.
const seenOnce = new Set<string>()
let last: Structure | undefined
let forbidden = false

/** The structure of `message`, once compiled; undefined: walk it generically. */
export function structureOf (message: LayerMessage): Structure | undefined {
  if (last?.matches(message) === true) return last
  if (forbidden) return undefined
  const plan: Plan = { keys: 0, loads: '', functions: '', count: 0 }
  const body = literalOf(message, 'm', 0, plan)
  if (body === undefined) return undefined
  const code = `${plan.functions}return [function compiledClone (m) {\n${plan.loads}return ${body}\n}, match1]`
  let structure = structures.get(code)
  if (structure === undefined) {
    if (code.length > MAX_CODE || structures.size >= MAX_STRUCTURES) return undefined
    if (!seenOnce.has(code)) {
      if (seenOnce.size >= MAX_STRUCTURES) seenOnce.clear()
      seenOnce.add(code)
      return undefined
    }
    seenOnce.delete(code)
    const made = compileFunction({ cloneValue }, code) as [Structure['clone'], Structure['matches']] | undefined
    if (made === undefined) return undefined
    structure = new Structure(made[0], made[1])
    structures.set(code, structure)
  }
  last = structure
  return structure
}

/**
 * The value a function body returns, given `helpers` by name, and `hasOwnProperty`, which the
 * lines of `sameKeysCode` read; undefined where the process forbids code generation (then no more
 * is attempted).
 */
export function compileFunction (helpers: Record<string, unknown>, body: string): unknown {
  if (forbidden) return undefined
  const given = { hasOwnProperty, ...helpers }
  try {
    return new Function(...Object.keys(given), body)(...Object.values(given))
  } catch {
    forbidden = true
    return undefined
  }
}

/** `key` as it is written in compiled code. */
export function keyLiteral (key: string): string {
  return JSON.stringify(key)
}

/**
 * The own keys of `value` that compiled code is written for, counted into `plan.keys`; undefined
 * past MAX_KEYS, or for a `__proto__` key (a literal would read it as its prototype).
 */
export function keysToWrite (value: object, plan: { keys: number }): string[] | undefined {
  const keys = Object.keys(value)
  plan.keys += keys.length
  if (plan.keys > MAX_KEYS || keys.includes('__proto__')) return undefined
  return keys
}

/**
 * Compiled lines that return false unless the object `ref` names has exactly `keys` as its own
 * enumerable keys, in that order (for code made by `compileFunction`, which gives them
 * `hasOwnProperty`).
 */
export function sameKeysCode (ref: string, keys: readonly string[]): string {
  let cases = ''
  for (let i = 0; i < keys.length; i++) cases += `case ${i}: if (k !== ${keyLiteral(keys[i])}) return false; break\n`
  return `let i = 0
for (const k in ${ref}) {
switch (i++) {
${cases}default: return false
}
if (!hasOwnProperty.call(${ref}, k)) return false
}
if (i !== ${keys.length}) return false
`
}

// Not Object.hasOwn: V8 turns this call, on the object a for…in walks, into a check of its shape.
const hasOwnProperty = Object.prototype.hasOwnProperty

interface Plan {
  /** Properties written so far. */
  keys: number
  /** `const vN = …` lines that read the nested objects once. */
  loads: string
  /** One `matchN` function per object. */
  functions: string
  count: number
}

/**
 * An object literal that copies `value` (reached in the code as `ref`), and a `matchN` function
 * (N: the order this is called in) that checks an object has its structure; undefined: walk it
 * generically.
 */
function literalOf (value: Record<string, unknown>, ref: string, depth: number, plan: Plan): string | undefined {
  const match = `match${++plan.count}`
  const keys = keysToWrite(value, plan)
  if (keys === undefined) return undefined
  let out = '{'
  let kinds = ''
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]
    const name = keyLiteral(key)
    const item = value[key]
    let copy: string
    if (typeof item !== 'object' || item === null) {
      copy = `${ref}[${name}]`
      kinds += ` && (typeof (v = o[${name}]) !== 'object' || v === null)`
    } else if (depth < MAX_DEPTH && isPlainPrototype(Object.getPrototypeOf(item))) {
      const temp = `v${plan.count}`
      plan.loads += `const ${temp} = ${ref}[${name}]\n`
      kinds += ` && match${plan.count + 1}(o[${name}])`
      const nested = literalOf(item as Record<string, unknown>, temp, depth + 1, plan)
      if (nested === undefined) return undefined
      copy = nested
    } else {
      copy = `cloneValue(${ref}[${name}])`
    }
    out += `${i === 0 ? '' : ','}${name}:${copy}`
  }
  // What the literal copies is exactly what `{ ...o }` would: the same own keys, in order, whose
  // values are primitives where it copies them as they are.
  plan.functions += `function ${match} (o) {
if (typeof o !== 'object' || o === null) return false
const p = Object.getPrototypeOf(o)
if (p !== Object.prototype && p !== null) return false
${sameKeysCode('o', keys)}let v
return true${kinds}
}
`
  return `${out}}`
}
