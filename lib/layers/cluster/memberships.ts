/**
 * Memberships of this process' channels in a layer shared by many processes. While a group has
 * local members, this process subscribes to the group's route and fans its messages out locally;
 * each membership is also recorded in the backend on a lease this process renews every third of
 * it, so a process that dies leaves nothing behind for longer than the lease.
 */
import type { LocalStore } from '../local-store.js'
import type { LayerLogger } from '../types.js'
import { ttl, withTimeout } from '../deadline.js'
import type { Route, Transport } from './transport.js'

const RENEW_MIN_MS = 50

export interface MembershipSettings {
  store: LocalStore
  transport: Transport
  /** Milliseconds a record outlives its process at most. */
  leaseMs: number
  log: () => LayerLogger
  /** Routes every member's process must hear (its inbox, the broadcast route). */
  processRoutes: readonly Route[]
}

export class Memberships {
  readonly #store: LocalStore
  readonly #transport: Transport
  readonly #leaseMs: number
  readonly #log: () => LayerLogger
  readonly #processRoutes: readonly Route[]
  /** Groups whose route this process subscribes: those with local members. */
  readonly #groups = new Set<string>()
  readonly #renewer: NodeJS.Timeout
  #renewal: Promise<void> = Promise.resolve()
  #renewalQueued = false
  #closed = false

  constructor (settings: MembershipSettings) {
    this.#store = settings.store
    this.#transport = settings.transport
    this.#leaseMs = settings.leaseMs
    this.#log = settings.log
    this.#processRoutes = settings.processRoutes
    // Held weakly: a layer dropped without close() can still be collected.
    const ref = new WeakRef(this)
    const renewer: NodeJS.Timeout = setInterval(() => {
      const alive = ref.deref()
      if (alive === undefined) clearInterval(renewer)
      else void alive.renew(false)
    }, Math.max(this.#leaseMs / 3, RENEW_MIN_MS)).unref()
    this.#renewer = renewer
  }

  /** Joins locally, subscribes the group's route and records the lease; undone when that fails. */
  async add (group: string, channel: string): Promise<void> {
    const existed = this.#store.members(group)?.has(channel) === true
    this.#store.addMember(group, channel)
    this.#groups.add(group)
    const what = `groupAdd ${group}`
    const transport = this.#transport
    try {
      await Promise.all([
        withTimeout(Promise.all([this.subscribeProcess(), transport.subscribe({ kind: 'group', group })]), transport.timeout, what),
        transport.recordMembers(group, [[channel, ttl(this.#leaseMs)]], what)
      ])
    } catch (err) {
      if (!existed && !this.#closed) {
        this.#store.removeMember(group, channel)
        this.releaseIfEmpty(group)
      }
      throw err
    }
  }

  async remove (group: string, channel: string): Promise<void> {
    this.#store.removeMember(group, channel)
    this.releaseIfEmpty(group)
    await this.#transport.removeMembers(group, [channel], `groupDiscard ${group}`)
  }

  async discardChannel (channel: string): Promise<void> {
    const groups = [...(this.#store.groupsOf(channel) ?? [])]
    this.#store.discardChannel(channel)
    if (groups.length === 0) return
    for (const group of groups) this.releaseIfEmpty(group)
    const what = `discardChannel ${channel}`
    await Promise.all(groups.map(group => this.#transport.removeMembers(group, [channel], what)))
  }

  /** Subscribes this process' own routes (once; resolves when confirmed). */
  subscribeProcess (): Promise<unknown> {
    return Promise.all(this.#processRoutes.map(route => this.#transport.subscribe(route)))
  }

  /** Unsubscribes from a group once its last local member is gone. */
  releaseIfEmpty (group: string): void {
    if (this.#store.members(group) !== undefined || !this.#groups.delete(group)) return
    this.#transport.unsubscribe({ kind: 'group', group })
  }

  /** Forgets every local membership (a flush): nothing to renew, no group to hear. */
  forgetAll (): void {
    this.#store.flush()
    for (const group of this.#groups) this.#transport.unsubscribe({ kind: 'group', group })
    this.#groups.clear()
  }

  /** Live local memberships per group. */
  records (): Array<[string, string[]]> {
    const out: Array<[string, string[]]> = []
    for (const group of this.#groups) {
      const members = this.#store.members(group)
      if (members !== undefined && members.size > 0) out.push([group, [...members.keys()]])
    }
    return out
  }

  /** Re-writes every live record, at once when `urgent` (after a reconnect), else when due. */
  renew (urgent: boolean): Promise<void> {
    if (this.#renewalQueued && !urgent) return this.#renewal
    this.#renewalQueued = true
    this.#renewal = this.#renewal.then(() => {
      this.#renewalQueued = false
      return this.#renewNow()
    }).catch((err: unknown) => this.#log().error({ err }, 'membership renewal failed'))
    return this.#renewal
  }

  close (): void {
    this.#closed = true
    clearInterval(this.#renewer)
  }

  async #renewNow (): Promise<void> {
    if (this.#closed || !this.#transport.up) return
    const now = performance.now()
    const work: Array<[string, Array<[string, number]>]> = []
    for (const group of [...this.#groups]) {
      const members: Array<[string, number]> = []
      for (const [channel, expiresAt] of [...(this.#store.members(group) ?? [])]) {
        if (expiresAt <= now) this.#store.removeMember(group, channel)
        else members.push([channel, ttl(Math.min(this.#leaseMs, expiresAt - now))])
      }
      if (members.length === 0) this.releaseIfEmpty(group)
      else work.push([group, members])
    }
    try {
      await Promise.all(work.map(([group, members]) => this.#transport.recordMembers(group, members, 'renew memberships')))
    } catch (err) {
      this.#log().warn({ err }, 'could not renew group memberships; retrying')
    }
  }
}
