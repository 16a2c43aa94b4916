import type { ChannelLayer } from '../../lib/layers/types.js'
import type { InMemoryChannelLayer } from '../../lib/layers/in-memory.js'

/**
 * A layer with only the contract's methods, as a third-party layer may be: a plain object without
 * discardChannel and without listen(), whose snake_case aliases are getters using `this`.
 */
export function contractOnly (inner: InMemoryChannelLayer): ChannelLayer {
  return {
    extensions: inner.extensions,
    newChannel: p => inner.newChannel(p),
    send: (c, m) => inner.send(c, m),
    receive: (c, o) => inner.receive(c, o),
    groupAdd: (g, c, o) => inner.groupAdd(g, c, o),
    groupDiscard: (g, c) => inner.groupDiscard(g, c),
    groupSend: (g, m) => inner.groupSend(g, m),
    history: (g, o) => inner.history(g, o),
    presence: g => inner.presence(g),
    flush: () => inner.flush(),
    close: () => inner.close(),
    get group_add () { return this.groupAdd },
    get group_discard () { return this.groupDiscard },
    get group_send () { return this.groupSend },
    get new_channel () { return this.newChannel }
  }
}

/** What `receive` resolves with, or a rejection naming the channel once `ms` have passed without it. */
export async function receiveWithin<T> (channel: string, ms: number, receive: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(new Error(`nothing on ${channel} within ${ms} ms`)), ms)
  try {
    return await receive(controller.signal)
  } finally {
    clearTimeout(timer)
  }
}
