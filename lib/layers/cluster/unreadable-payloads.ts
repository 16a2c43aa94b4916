/**
 * What a process sharing a layer says of the payloads it cannot read, each kind at most once a
 * second (throttled-warning.ts): one no key of its opens (a process shares the layer with a key
 * this one lacks: it fails every payload, not one), counted in `undecryptable`; and one no process
 * of this layer wrote (a process with keys where this one has none, or the reverse, or anything
 * else published on its routes).
 */
import type { LayerLogger } from '../types.js'
import { unopenedHere } from '../codec.js'
import { ThrottledWarning } from '../throttled-warning.js'

export class UnreadablePayloads {
  readonly #log: () => LayerLogger
  readonly #count: () => void
  readonly #undecryptable: ThrottledWarning
  readonly #foreign: ThrottledWarning

  /** `count`: adds one to the layer's `undecryptable`. */
  constructor (log: () => LayerLogger, count: () => void) {
    this.#log = log
    this.#count = count
    this.#undecryptable = new ThrottledWarning(log,
      'dropped a payload that no encryption key opens: a process shares this layer with a key this one lacks (see encryptionKeys)',
      n => `dropped ${n} more payloads that no encryption key opens within a second`, 'dropped')
    this.#foreign = new ThrottledWarning(log, 'ignored a payload this layer did not write',
      n => `ignored ${n} more payloads this layer did not write within a second`, 'ignored')
  }

  /** The codec's hook: no key opened a payload. */
  undecryptable (): void {
    this.#count()
    this.#undecryptable.warn({})
  }

  /** A payload no process of this layer wrote, heard `where`. */
  foreign (where: object): void {
    this.#foreign.warn(where)
  }

  /**
   * A stored payload that `history()`, `presence()` or a read-back left out: one no key opens is
   * reported already; one of a process with keys where this one has none, or the reverse, is
   * reported as a foreign one; anything else is logged, with `message`.
   */
  notDecoded (err: unknown, where: object, message: string): void {
    const unopened = unopenedHere(err)
    if (unopened === undefined) this.#log().warn({ err, ...where }, message)
    else if (!unopened.reported) this.foreign(where)
  }

  /** Logs what the second under way has counted, and stops. */
  close (): void {
    this.#undecryptable.close()
    this.#foreign.close()
  }
}
