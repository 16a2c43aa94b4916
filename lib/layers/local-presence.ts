/**
 * The presence the local store's memberships recorded (local-store.ts): group → channel → info,
 * only for memberships that recorded one, in join order. The store says when a membership starts
 * and ends; this keeps what each recorded.
 */
import { clonePlainObject } from './message.js'
import type { PresenceInfo } from './types.js'

export class PresenceTable {
  readonly #groups = new Map<string, Map<string, PresenceInfo>>()

  /** What `channel` recorded in `group`, if anything. */
  of (group: string, channel: string): PresenceInfo | undefined {
    return this.#groups.get(group)?.get(channel)
  }

  /** Records what `channel` has in `group`, replacing what it had. */
  record (group: string, channel: string, info: PresenceInfo): void {
    let entries = this.#groups.get(group)
    if (entries === undefined) {
      entries = new Map()
      this.#groups.set(group, entries)
    }
    entries.set(channel, info)
  }

  /** Forgets what `channel` recorded in `group`, and returns it (undefined: it recorded nothing). */
  take (group: string, channel: string): PresenceInfo | undefined {
    const entries = this.#groups.get(group)
    const info = entries?.get(channel)
    if (entries === undefined || info === undefined) return undefined
    entries.delete(channel)
    if (entries.size === 0) this.#groups.delete(group)
    return info
  }

  /** Copies of the group's entries whose channel `isMember` says is a live member, in join order. */
  list (group: string, isMember: (channel: string) => boolean): Array<{ channel: string, info: PresenceInfo }> {
    const entries = this.#groups.get(group)
    if (entries === undefined) return []
    const out: Array<{ channel: string, info: PresenceInfo }> = []
    for (const [channel, info] of entries) if (isMember(channel)) out.push({ channel, info: clonePlainObject(info) })
    return out
  }

  clear (): void {
    this.#groups.clear()
  }
}
