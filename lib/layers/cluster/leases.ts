/**
 * Keeps this process' membership records alive in a backend shared by many processes: every
 * lease is renewed each third of it, at once after an outage (and again while that fails), and a
 * renewal that failed is tried again soon. The presence entries of processes that died are looked
 * for here too, so that the groups hear they are gone. What to write is the memberships' to say
 * (memberships.ts); when, and what happens when it fails, is this file's.
 */
import type { LayerLogger } from '../types.js'
import type { StoredPresence, Transport } from './transport.js'

const RENEW_MIN_MS = 50
/** The renewal after an outage, tried this many times, the next after this times the tries. */
const REASSERT_TRIES = 3
const REASSERT_RETRY_MS = 1000
/** A renewal that failed is tried again after this. */
const RENEW_RETRY_MS = 2000
/** Dead processes' presence entries are looked for this often (at most). */
export const REAP_MS = 5000

/** One group's records to write again: its live members with the ms left to each, and the presence they recorded. */
export type DueRecords = [group: string, members: Array<[string, number]>, presence: StoredPresence[]]

/** What the leases renew and reap for. */
export interface LeaseHolder {
  /** The records to write now; groups found with no live member are let go on the way. */
  due: () => DueRecords[]
  /** The groups in which dead processes' presence entries are looked for. */
  reapable: () => string[]
  /** Tells a group of presence entries that came (written again: they had been lost) or went (reaped). */
  announce: (group: string, type: 'presence.join' | 'presence.leave', entries: StoredPresence[]) => Promise<void>
  /**
   * The backend had lost presence entries of the group (these were written again): so were, with
   * them, those of processes that died meanwhile, which no one will announce gone.
   */
  presenceLost: (group: string) => void
}

export class Leases {
  readonly #transport: Transport
  readonly #holder: LeaseHolder
  readonly #log: () => LayerLogger
  readonly #timers: NodeJS.Timeout[]
  #renewal: Promise<boolean> = Promise.resolve(true)
  #retryTimer: NodeJS.Timeout | undefined
  #renewalQueued = false
  #closed = false
  // How often presence is reaped: REAP_MS, sooner for a shorter lease.
  readonly #reapMs: number

  constructor (transport: Transport, holder: LeaseHolder, leaseMs: number, log: () => LayerLogger) {
    this.#transport = transport
    this.#holder = holder
    this.#log = log
    this.#reapMs = Math.max(Math.min(REAP_MS, leaseMs), RENEW_MIN_MS)
    // Held weakly: a layer dropped without close() can still be collected.
    const ref = new WeakRef(this)
    const every = (ms: number, run: (alive: Leases) => void): NodeJS.Timeout => {
      const timer: NodeJS.Timeout = setInterval(() => {
        const alive = ref.deref()
        if (alive === undefined) clearInterval(timer)
        else run(alive)
      }, ms).unref()
      return timer
    }
    this.#timers = [
      every(Math.max(leaseMs / 3, RENEW_MIN_MS), alive => { void alive.renew(false) }),
      every(this.#reapMs, alive => { void alive.#reap() })
    ]
  }

  /**
   * Re-writes every live record, at once when `urgent` (after a reconnect), else when due.
   * Resolves with whether every record was written.
   */
  renew (urgent: boolean): Promise<boolean> {
    if (this.#renewalQueued && !urgent) return this.#renewal
    this.#renewalQueued = true
    this.#renewal = this.#renewal.then(() => {
      this.#renewalQueued = false
      return this.#renewNow()
    }).catch((err: unknown) => {
      this.#log().error({ err }, 'membership renewal failed')
      return false
    })
    return this.#renewal
  }

  /** The last renewal asked for, once it is over (it never rejects). */
  get settled (): Promise<boolean> {
    return this.#renewal
  }

  /**
   * After an outage: renews at once, and again 1 s and 2 s later while it fails (a Cluster client
   * may take a moment to route to a master that came back), so that what the backend lost is
   * written back before the layer says it is back; past that, the regular renewal goes on.
   */
  async reassert (): Promise<void> {
    for (let tries = 1; !await this.renew(true) && tries < REASSERT_TRIES && !this.#closed; tries++) {
      await new Promise(resolve => setTimeout(resolve, REASSERT_RETRY_MS * tries).unref())
    }
  }

  close (): void {
    this.#closed = true
    for (const timer of this.#timers) clearInterval(timer)
    clearTimeout(this.#retryTimer)
  }

  /**
   * A renewal that failed is tried again RENEW_RETRY_MS later, not only at the next one due: on
   * Redis Cluster one master can go and come back empty without the client closing, and what it
   * lost (records, presence) is written back as soon as it answers.
   */
  #retry (): void {
    if (this.#retryTimer !== undefined || this.#closed) return
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined
      void this.renew(true)
    }, RENEW_RETRY_MS).unref()
  }

  async #renewNow (): Promise<boolean> {
    if (this.#closed || !this.#transport.up) return false
    const work = this.#holder.due()
    try {
      // An entry written again was lost (the backend's data, or reaped while this process stalled): announced anew.
      await Promise.all(work.map(async ([group, members, presence]) => {
        const restored = await this.#transport.recordMembers(group, members, 'renew memberships', presence)
        if (restored.length > 0) this.#holder.presenceLost(group)
        await this.#holder.announce(group, 'presence.join', restored)
      }))
      return true
    } catch (err) {
      this.#log().warn({ err }, 'could not renew group memberships; retrying')
      this.#retry()
      return false
    }
  }

  /** Finds the presence entries of processes that died, in the holder's reapable groups, and announces them gone. */
  async #reap (): Promise<void> {
    if (this.#closed || !this.#transport.up) return
    try {
      await Promise.all(this.#holder.reapable().map(async group =>
        await this.#holder.announce(group, 'presence.leave', await this.#transport.reapPresence(group, this.#reapMs, 'reap presence'))))
    } catch (err) {
      this.#log().warn({ err }, 'could not look for the presence of processes that died; retrying')
    }
  }
}
