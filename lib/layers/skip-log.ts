/**
 * The warning for group members skipped because their channel was full, at most once a second. A
 * slow member of a busy group is skipped at every message, and a line per skip floods the log
 * (one overload run here skipped 402,250 times). The first skip is logged at once; those that
 * follow within the second, as one line with their number when the second ends. Every skip is
 * counted in `stats.groupSendSkipped` (and the `full` drops of the metrics) all the same.
 */
import type { LayerLogger } from './types.js'

const WINDOW_MS = 1000

export class SkipLog {
  readonly #log: () => LayerLogger
  #window: ReturnType<typeof setTimeout> | undefined
  #more = 0
  #last: { group: string, channel: string } | undefined

  constructor (log: () => LayerLogger) {
    this.#log = log
  }

  skipped (group: string, channel: string): void {
    if (this.#window !== undefined) {
      this.#more++
      this.#last = { group, channel }
      return
    }
    this.#log().warn({ group, channel }, 'groupSend skipped a full channel')
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
    if (this.#more === 0) return false
    this.#log().warn({ ...this.#last, skipped: this.#more }, `groupSend skipped full channels ${this.#more} more times within a second (the last: this one)`)
    this.#more = 0
    return true
  }
}
