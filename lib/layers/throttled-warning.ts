/**
 * A warning that may come at every message, logged at most once a second. A slow member of a busy
 * group is skipped at every message (one overload run here skipped 402,250 times), and a process
 * without the key a sender encrypts with fails to open every payload: a line each floods the log.
 * The first is logged at once; those that follow within the second, as one line with their number
 * when the second ends, with the fields of the last. Each is counted (in the layer's stats and the
 * metrics) all the same.
 */
import type { LayerLogger } from './types.js'

const WINDOW_MS = 1000

export class ThrottledWarning {
  readonly #log: () => LayerLogger
  readonly #message: string
  readonly #more: (count: number) => string
  readonly #countField: string
  #window: ReturnType<typeof setTimeout> | undefined
  #count = 0
  #last: object = {}

  /**
   * `message` for the first; `more(n)` for the line that counts the n that followed within the
   * second, their number in its field `countField`.
   */
  constructor (log: () => LayerLogger, message: string, more: (count: number) => string, countField: string) {
    this.#log = log
    this.#message = message
    this.#more = more
    this.#countField = countField
  }

  warn (fields: object): void {
    if (this.#window !== undefined) {
      this.#count++
      this.#last = fields
      return
    }
    this.#log().warn(fields, this.#message)
    this.#open()
  }

  /** Logs what the second under way has counted, and stops. */
  close (): void {
    clearTimeout(this.#window)
    this.#window = undefined
    this.#report()
  }

  #open (): void {
    this.#window = setTimeout(() => {
      this.#window = undefined
      if (this.#report()) this.#open()
    }, WINDOW_MS).unref()
  }

  /** Whether there was something to log. */
  #report (): boolean {
    if (this.#count === 0) return false
    this.#log().warn({ ...this.#last, [this.#countField]: this.#count }, this.#more(this.#count))
    this.#count = 0
    return true
  }
}
