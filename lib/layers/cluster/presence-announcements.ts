/**
 * What a group's members hear of the presence entries that come and go, in a group that announces
 * them (`presenceEvents`): an entry recorded, written back or removed is announced to the group;
 * a join that records what the membership had recorded already announces nothing; and when the
 * backend lost the group's entries, the local members are told to read the list afresh, since the
 * entries of processes that died meanwhile went with the data and no one will announce them gone.
 * So are they after this process was cut off: what was announced meanwhile never reached it.
 */
import { isDeepStrictEqual } from 'node:util'
import { SKIPPED } from '../local-channels.js'
import type { PresenceInfo } from '../types.js'
import type { MembershipSettings } from './memberships.js'
import type { StoredPresence } from './transport.js'

export type PresenceChange = 'presence.join' | 'presence.leave'

export class PresenceAnnouncements {
  readonly #settings: Pick<MembershipSettings, 'store' | 'codec' | 'presenceEvents' | 'announce' | 'log'>
  // From the end of an outage until its re-assertion is done (afterOutage()): every group's
  // members are told then, so the losses its renewals find are not told on their own (two reads).
  #outageEnding = false

  constructor (settings: Pick<MembershipSettings, 'store' | 'codec' | 'presenceEvents' | 'announce' | 'log'>) {
    this.#settings = settings
  }

  /** Announces entries that came or went to a group that wants to hear of them; a failure is logged. */
  async all (group: string, type: PresenceChange, entries: readonly StoredPresence[]): Promise<void> {
    if (entries.length === 0 || !this.#settings.presenceEvents(group)) return
    try {
      await Promise.all(entries.map(([channel, info]) => this.#settings.announce(group, type, channel, info)))
    } catch (err) {
      this.#settings.log().warn({ err, group }, `could not announce a ${type}`)
    }
  }

  /** A join recorded `info` (encoded: `recorded`) where the membership had `before`: announced unless it is the same. */
  async recorded (group: string, channel: string, recorded: Buffer, before: Buffer | null, info: PresenceInfo | undefined): Promise<void> {
    if (this.#changed(before, info)) await this.all(group, 'presence.join', [[channel, recorded]])
  }

  /**
   * What members were told of the others' entries no longer holds: the backend lost the group's
   * entries (written back by the processes that are alive), or this process was cut off while
   * announcements went out. Each local member gets the marker of skipped announcements, in
   * order, so that a consumer that keeps a list (GroupsConsumer) reads it afresh.
   */
  lost (group: string): void {
    if (this.#outageEnding || !this.#settings.presenceEvents(group)) return
    const store = this.#settings.store
    const members = store.members(group)
    if (members === undefined) return
    for (const channel of [...members.keys()]) store.deliver(channel, SKIPPED, { group }, true)
  }

  /** An outage ended: the memberships are being written back, and `afterOutage()` follows. */
  outageEnds (): void {
    this.#outageEnding = true
  }

  /** The memberships are written back after an outage: the members of `groups` read the list afresh. */
  afterOutage (groups: Iterable<string>): void {
    this.#outageEnding = false
    for (const group of groups) this.lost(group)
  }

  /** Whether a join changes the presence the membership recorded (sealed bytes differ each time: compare what they hold). */
  #changed (before: Buffer | null, info: PresenceInfo | undefined): boolean {
    if (before === null) return true
    try {
      return !isDeepStrictEqual(this.#settings.codec.decodeObject(before), info)
    } catch {
      return true
    }
  }
}
