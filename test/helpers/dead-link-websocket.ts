import type { Test } from 'tap'
import WebSocket from 'ws'

/**
 * A WebSocket class that acts as a browser's on a connection that died: no terminate(), and
 * close() starts a closing handshake that never ends, so its `close` never comes. Each call makes
 * a class of its own: `sockets` lists the sockets it made, and `t`'s teardown ends them for real.
 */
export function deadLinkWebSocket (t: Test): { BrowserSocket: typeof globalThis.WebSocket, sockets: WebSocket[] } {
  const sockets: WebSocket[] = []
  class BrowserSocket extends WebSocket {
    constructor (address: string, protocols?: string | string[]) {
      super(address, protocols)
      sockets.push(this)
      Object.defineProperty(this, 'terminate', { value: undefined })
    }

    override close (): void {}
  }
  t.teardown(() => { for (const socket of sockets) WebSocket.prototype.terminate.call(socket) })
  return { BrowserSocket: BrowserSocket as unknown as typeof globalThis.WebSocket, sockets }
}
