/**
 * A fan-out's copies, made by code compiled for the message's structure.
 *
 * A fan-out copies one message for every member (Channels' semantics: a handler may change its
 * message). Copied generically (message.ts), every copy walks the message's keys again and stores
 * each value through a site that sees every shape of the app, so V8 looks each one up. The code
 * compiled here is the message's structure written out as object literals — for
 * `{ type, payload: { s, g } }`, `{ "type": s["type"], "payload": { "s": v1["s"], "g": v1["g"] } }` —
 * which V8 builds as one allocation per object, of one shape, from loads of known shapes.
 *
 * - The structure is read once per fan-out: the message is pristine while its fan-out runs (every
 *   member gets a copy, none the message), so the code read from it copies it exactly.
 * - One function per structure (the keys and which values are objects), compiled at its second
 *   fan-out and kept: a structure is most often the app's code, not its data, so an app has few,
 *   and one that came once (keys made of data) is not compiled. Past MAX_STRUCTURES, for a
 *   message larger than MAX_KEYS or MAX_CODE, and where the process forbids code generation
 *   (`--disallow-code-generation-from-strings`), the copy is the generic one.
 * - Keys enter the code only as JSON string literals (every one a valid JavaScript string
 *   literal), and a message with a `__proto__` key, which a literal would read as its prototype,
 *   is copied generically. Arrays and bytes, and objects nested deeper than MAX_DEPTH, are copied
 *   by the generic walk from inside the compiled code.
 */
import { cloneMessage, cloneValue } from './message.js'
import type { LayerMessage } from './types.js'

/** Makes a member's copy of the message a fan-out copies from. */
export type Cloner = (message: LayerMessage) => LayerMessage

const MAX_STRUCTURES = 256
const MAX_KEYS = 64
const MAX_CODE = 4096
const MAX_DEPTH = 4

const compiled = new Map<string, Cloner>()
// Structures seen once, not compiled yet; forgotten all at once when full.
const seenOnce = new Set<string>()
let forbidden = false

/** The copier for `message`, which must stay as it is while the returned function is used. */
export function clonerFor (message: LayerMessage): Cloner {
  if (forbidden) return cloneMessage
  const plan: Plan = { keys: 0, loads: '', temps: 0 }
  const body = literalOf(message, 's', 0, plan)
  if (body === undefined) return cloneMessage
  const code = `${plan.loads}return ${body}`
  const cloner = compiled.get(code)
  if (cloner !== undefined) return cloner
  if (code.length > MAX_CODE || compiled.size >= MAX_STRUCTURES) return cloneMessage
  if (!seenOnce.has(code)) {
    if (seenOnce.size >= MAX_STRUCTURES) seenOnce.clear()
    seenOnce.add(code)
    return cloneMessage
  }
  seenOnce.delete(code)
  return compile(code)
}

function compile (code: string): Cloner {
  let cloner: Cloner
  try {
    cloner = new Function('cloneValue', `return function compiledClone (s) {\n${code}\n}`)(cloneValue) as Cloner
  } catch {
    // Code generation is forbidden in this process: every copy is the generic one.
    forbidden = true
    return cloneMessage
  }
  compiled.set(code, cloner)
  return cloner
}

interface Plan {
  /** Properties written so far. */
  keys: number
  /** `const vN = …` lines that read the nested objects once. */
  loads: string
  temps: number
}

/** An object literal that copies `value` (reached in the code as `ref`); undefined: copy it generically. */
function literalOf (value: Record<string, unknown>, ref: string, depth: number, plan: Plan): string | undefined {
  const keys = Object.keys(value)
  plan.keys += keys.length
  if (plan.keys > MAX_KEYS) return undefined
  let out = '{'
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]
    if (key === '__proto__') return undefined
    const name = JSON.stringify(key)
    const item = value[key]
    let copy: string
    if (typeof item !== 'object' || item === null) {
      copy = `${ref}[${name}]`
    } else if (depth < MAX_DEPTH && isPlainObject(item)) {
      const temp = `v${++plan.temps}`
      plan.loads += `const ${temp} = ${ref}[${name}]\n`
      const nested = literalOf(item as Record<string, unknown>, temp, depth + 1, plan)
      if (nested === undefined) return undefined
      copy = nested
    } else {
      copy = `cloneValue(${ref}[${name}])`
    }
    out += `${i === 0 ? '' : ','}${name}:${copy}`
  }
  return `${out}}`
}

function isPlainObject (value: object): boolean {
  const proto: unknown = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}
