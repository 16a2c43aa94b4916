/**
 * What the local store (local-store.ts) keeps per membership and per listened channel: one small
 * object each, read on the way of every delivery.
 */
import type { ChannelListener, ChannelSink } from './types.js'
import type { LocalStore } from './local-store.js'

/**
 * A channel's membership of a group: until when, and the listener its messages go to, if the
 * channel has one. The fan-out finds a member's listener here, beside its deadline, rather than
 * in a table of every channel: one object read per member instead of a hash lookup.
 *
 * `groupExpiry` ends a membership nobody renews. A channel with a listener (an open connection's)
 * is in use: its memberships are renewed for as long as it has one, so they do not lapse under a
 * connection that stays open for longer than `groupExpiry`; the deadline runs again from the
 * moment the listener goes.
 */
export class Membership {
  constructor (public expiresAt: number, public sink: ChannelSink | undefined) {}
}

/** Until when the membership lasts (`performance.now()` ms): for ever while its channel has a listener. */
export function deadlineOf (membership: Membership): number {
  return membership.sink === undefined ? membership.expiresAt : Infinity
}

/** One object per listened channel (every connection has one), rather than a closure per method. */
export class Listener implements ChannelListener {
  constructor (readonly store: LocalStore, readonly channel: string, readonly sink: ChannelSink) {}

  resume (): void {
    this.store.resumeListener(this.channel, this.sink)
  }

  close (): void {
    this.store.closeListener(this.channel, this.sink)
  }
}
