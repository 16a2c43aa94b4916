/**
 * The positions this process' own group sends were given, per group with history: a backend that
 * lost its last writes (restarted from an older snapshot, a replica that was behind took over)
 * gives offsets out again in the same epoch, and a send that gets one at or below the last this
 * process got shows it, also for a group no process is listening to (stream-gaps.ts notices it
 * from what a process hears). Bounded: a process that sends to many groups remembers the latest.
 */
import type { StreamPosition } from '../types.js'

const MAX_GROUPS = 10_000

export class SentPositions {
  readonly #last = new Map<string, StreamPosition>()

  /** Records a send's position; true when the group's offsets went back in its epoch. */
  wentBack (group: string, position: StreamPosition): boolean {
    const last = this.#last.get(group)
    if (last === undefined) {
      if (this.#last.size >= MAX_GROUPS) this.#last.delete(this.#last.keys().next().value as string)
      this.#last.set(group, { offset: position.offset, epoch: position.epoch })
      return false
    }
    const back = last.epoch === position.epoch && position.offset <= last.offset
    last.offset = position.offset
    last.epoch = position.epoch
    return back
  }
}
