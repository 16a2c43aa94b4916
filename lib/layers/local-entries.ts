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
 */
export class Membership {
  constructor (public expiresAt: number, public sink: ChannelSink | undefined) {}
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
