/**
 * The presence entries this process' memberships recorded in the backend, as they were sent: each
 * renewal carries them, so that an entry the backend lost (a restart without persistence, or a
 * process that took this one for dead while it stalled) is written back. An entry goes with its
 * membership, however the membership ends.
 */
import type { StoredPresence } from './transport.js'

export class RecordedPresence {
  /** group → channel → encoded info. */
  readonly #groups = new Map<string, Map<string, Buffer>>()

  record (group: string, channel: string, info: Buffer): void {
    let entries = this.#groups.get(group)
    if (entries === undefined) {
      entries = new Map()
      this.#groups.set(group, entries)
    }
    entries.set(channel, ownCopy(info))
  }

  has (group: string, channel?: string): boolean {
    const entries = this.#groups.get(group)
    return entries !== undefined && (channel === undefined || entries.has(channel))
  }

  forget (group: string, channel: string): void {
    this.#groups.get(group)?.delete(channel)
  }

  forgetGroup (group: string): void {
    this.#groups.delete(group)
  }

  clear (): void {
    this.#groups.clear()
  }

  /** The group's entries of live members (`isMember`); the others are forgotten. */
  live (group: string, isMember: (channel: string) => boolean): StoredPresence[] {
    const entries = this.#groups.get(group)
    const out: StoredPresence[] = []
    if (entries === undefined) return out
    for (const [channel, info] of entries) {
      if (isMember(channel)) out.push([channel, info])
      else entries.delete(channel)
    }
    return out
  }
}

/** A buffer of its own: an encoding may be a view of the encoder's shared (and growing) buffer. */
function ownCopy (bytes: Buffer): Buffer {
  const own = Buffer.allocUnsafeSlow(bytes.length)
  bytes.copy(own)
  return own
}
