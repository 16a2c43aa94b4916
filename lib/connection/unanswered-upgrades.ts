/**
 * Upgrade requests that have had no answer yet: the app's hooks still run for them. A hook that
 * never returns (a session store that hangs on `get`, an auth service that never answers) holds its
 * socket open, and the HTTP server's close waits for every socket: `app.close()` would never end.
 * At shutdown, those still unanswered after the grace get a 503 and their socket is closed.
 *
 * Every upgrade is watched, the app's own WebSocket routes too (their hooks can hang the same
 * way), from the server's `upgrade` event (`watch()`) until ws completes it, the socket closes,
 * or it is answered (written to). An open connection holds nothing here.
 */
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { WebSocketServer } from 'ws'

/**
 * Closes the socket of an upgrade request answered with a status, once the answer is written:
 * @fastify/websocket does so only for requests its own hook saw (not those an earlier app-wide
 * hook answered, nor a route outside its context), and nothing else would, so the client would
 * wait and the server's close with it.
 */
export function closeAnsweredUpgrade (request: IncomingMessage): void {
  request.socket?.destroySoon()
}

export class UnansweredUpgrades {
  // Keyed by the request, as ws' `connection` event names it; with what forgets it on the socket's close.
  readonly #waiting = new Map<IncomingMessage, { socket: Socket, forget: () => void }>()
  #emptied: (() => void) | null = null

  constructor (wss: WebSocketServer) {
    wss.on('connection', (_ws: unknown, request: IncomingMessage) => { this.#forget(request) })
  }

  /** An upgrade request arrived on `socket`. */
  watch (request: IncomingMessage, socket: Socket): void {
    const forget = (): void => { this.#forget(request) }
    this.#waiting.set(request, { socket, forget })
    socket.once('close', forget)
  }

  #forget (request: IncomingMessage): void {
    const waiting = this.#waiting.get(request)
    if (waiting === undefined) return
    this.#waiting.delete(request)
    waiting.socket.off('close', waiting.forget)
    if (this.#waiting.size === 0) this.#emptied?.()
  }

  /** Resolves once no upgrade waits without an answer: each was upgraded, answered or left. */
  async answered (): Promise<void> {
    // Those answered already (a status written, the socket not yet closed) wait for nothing.
    for (const [request, { socket }] of [...this.#waiting]) if (socket.bytesWritten > 0) this.#forget(request)
    if (this.#waiting.size === 0) return
    await new Promise<void>(resolve => { this.#emptied = resolve })
    this.#emptied = null
  }

  /** Answers 503 to those still unanswered and closes their sockets; returns how many. */
  refuseAll (): number {
    let refused = 0
    for (const [request, { socket }] of [...this.#waiting]) {
      this.#forget(request)
      if (socket.destroyed) continue
      if (socket.bytesWritten === 0) {
        socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
        refused++
      }
      socket.destroySoon()
    }
    return refused
  }
}
