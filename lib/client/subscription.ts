/**
 * One group the client is in: the last position it saw (what a re-join asks to recover from), its
 * presence list, and the app's handlers. The client (client.ts) owns the socket; this decides what
 * each frame of the group means.
 */
import type { GroupJoin, PresenceEntry, StreamPosition } from '../layers/types.js'
import type { JoinedFrame, MessageFrame, PresenceFrame } from '../protocol.js'
import type { ChannelsClientError } from './errors.js'

/** How a message came: its group, and its position when the group keeps history. */
export interface MessageInfo {
  group: string
  offset?: number
  epoch?: string
}

export interface SubscriptionHandlers<T = unknown> {
  /**
   * Where to start: the `position` a subscription of an earlier connection had reached (a page
   * that saved it before a reload). The first join asks to recover from it: `message()` then gets
   * what the group sent after it, and `gap()` runs when that cannot be recovered.
   */
  since?: StreamPosition | null
  /** Every message of the group, in order, each once (`forward()` on the server shapes `data`). */
  message? (data: T, info: MessageInfo): void
  /** The group's presence list, whenever it changes (the server must record presence). */
  presence? (entries: PresenceEntry[]): void
  /** Messages may have been missed (a re-join could not recover them): refetch the state. */
  gap? (): void
  /** A re-join after a reconnect was refused: the subscription has ended. */
  error? (error: ChannelsClientError): void
}

export interface Subscription {
  readonly group: string
  /** Resolves with the first join's result; rejects with a ChannelsClientError (its `code` says why). */
  readonly ready: Promise<GroupJoin>
  /** The last position seen: null before any, and for a group without history. */
  readonly position: StreamPosition | null
  /** The current presence list. */
  readonly presence: PresenceEntry[]
  /** Leaves the group; nothing more arrives for this subscription. */
  leave (): void
}

type Report = (err: unknown) => void

export class GroupSubscription<T = unknown> implements Subscription {
  readonly ready: Promise<GroupJoin>
  position: StreamPosition | null = null
  /** Joined on the current socket: frames of the group are taken only then. */
  joined = false
  everJoined = false
  /** Join frames sent on this socket and not answered yet. */
  awaiting = 0
  retries = 0
  retryTimer: ReturnType<typeof setTimeout> | undefined = undefined
  readonly #entries = new Map<string, PresenceEntry>()
  #resolve!: (join: GroupJoin) => void
  #reject!: (err: ChannelsClientError) => void

  constructor (readonly group: string, readonly handlers: SubscriptionHandlers<T>, readonly leave: () => void, readonly report: Report) {
    this.position = handlers.since ?? null
    this.ready = new Promise((resolve, reject) => { this.#resolve = resolve; this.#reject = reject })
    // Whoever does not wait for `ready` learns of a refusal from `error`: never an unhandled rejection.
    this.ready.catch(() => {})
  }

  get presence (): PresenceEntry[] {
    return [...this.#entries.values()]
  }

  onJoined ({ position, recovered, presence }: JoinedFrame): void {
    if (presence !== undefined) checkPresenceList(presence)
    const first = !this.everJoined
    this.joined = this.everJoined = true
    this.retries = 0
    // Asked to recover from a position (a re-join, or `since`): the replay comes next and moves it.
    const asked = this.position !== null
    if (!recovered || !asked) this.position = position
    if (first) this.#resolve({ position, recovered })
    if (presence !== undefined) this.#setPresence(presence)
    // A re-join that did not recover (a group without history never does), or a first join from
    // a `since` that could not be.
    if ((!first || asked) && !recovered) this.#call('gap')
  }

  /** The whole presence list again, sent unasked for this membership (announcements were skipped). */
  onPresenceList ({ presence }: JoinedFrame): void {
    if (presence === undefined) return
    checkPresenceList(presence)
    this.#setPresence(presence)
  }

  #setPresence (presence: PresenceEntry[]): void {
    this.#entries.clear()
    for (const entry of presence) this.#entries.set(entry.channel, entry)
    this.#call('presence', this.presence)
  }

  onMessage ({ offset, epoch, data }: MessageFrame): void {
    if (typeof offset === 'number' && typeof epoch === 'string') {
      const last = this.position
      if (last !== null && last.epoch === epoch && offset <= last.offset) return // had it already
      this.position = { offset, epoch }
      // The group's history was lost while we were in it: what it held may not have reached us.
      if (last !== null && last.epoch !== epoch) this.#call('gap')
    }
    this.#call('message', data as T, { group: this.group, offset, epoch })
  }

  onPresence ({ join, leave }: PresenceFrame): void {
    if (join !== undefined) this.#entries.set(join.channel, join)
    if (leave !== undefined) this.#entries.delete(leave.channel)
    this.#call('presence', this.presence)
  }

  /** The subscription ended without a join, or a re-join was refused. */
  fail (err: ChannelsClientError): void {
    if (this.everJoined) this.#call('error', err)
    else this.#reject(err)
  }

  #call<K extends Exclude<keyof SubscriptionHandlers<T>, 'since'>> (name: K, ...args: Parameters<NonNullable<SubscriptionHandlers<T>[K]>>): void {
    const handler = this.handlers[name] as ((...a: unknown[]) => void) | undefined
    try {
      handler?.apply(this.handlers, args)
    } catch (err) {
      this.report(err)
    }
  }
}

/** Checked before anything changes: a string is iterable too, and would be taken for a list of entries. */
function checkPresenceList (presence: unknown): void {
  if (!(Array.isArray(presence) && presence.every(entry => typeof (entry as PresenceEntry | null)?.channel === 'string'))) {
    throw new TypeError('"presence" is not a list of { channel, info }')
  }
}
