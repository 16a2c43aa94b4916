/**
 * The socket as the connection's lifecycle sees it: what it needs of it (ws' WebSocket has it; a
 * test fakes it, and another transport could adapt to it), and the data it brings.
 */
import { EventEmitter } from 'node:events'
import type { RawData } from 'ws'
import type { WritableSocket } from './outbound.js'
import type { Readable } from './flow-control.js'

export interface ConnectionSocket extends WritableSocket, Readable {
  on (event: 'message', listener: (data: RawData, binary: boolean) => void): unknown
  on (event: 'pong', listener: () => void): unknown
  on (event: 'ping', listener: () => void): unknown
  on (event: 'error', listener: (err: Error & { code?: string }) => void): unknown
  on (event: 'close', listener: (code: number) => void): unknown
  close (code: number, reason: string): void
  terminate (): void
  ping (): void
  /**
   * A socket whose last bytes may still be leaving after close() (an HTTP response): resolves once
   * they have (true), or once the socket is gone without them (false: the grace dropped a reader
   * that did not take them, or it left).
   */
  drained? (): Promise<boolean>
}

/** What a connection does with its socket's events. */
export interface SocketEvents {
  frame (data: RawData, binary: boolean): void
  pong (): void
  /** A ping from the peer (ws has answered it). */
  ping (): void
  failed (err: Error & { code?: string }): void
  closed (code: number): void
}

// One set of listener functions serves every socket (they find their connection by the socket the
// event came from): a connection holds no closure of its own for them.
const bySocket = new WeakMap<object, SocketEvents>()
function onMessage (this: object, data: RawData, binary: boolean): void { bySocket.get(this)?.frame(data, binary) }
function onPong (this: object): void { bySocket.get(this)?.pong() }
function onPing (this: object): void { bySocket.get(this)?.ping() }
function onError (this: object, err: Error & { code?: string }): void { bySocket.get(this)?.failed(err) }
function onClose (this: object, code: number): void { bySocket.get(this)?.closed(code) }

/**
 * Sends `socket`'s events to `events` from now on; its pings only with `pings` (a connection that
 * counts them: one with a rate limit). A close frame from the peer counts as the
 * close: ws reports it only once the TCP connection is gone too, which a peer that never ends
 * its side holds off for 30 s (ws' own limit), with the connection taken for open meanwhile. Its
 * frame reader says when the frame came ('conclude', after ws has answered it): a ws detail,
 * used where it is there; without it, ws' 'close' is the close.
 */
export function listenTo (socket: ConnectionSocket, events: SocketEvents, pings: boolean): void {
  bySocket.set(socket, events)
  socket.on('message', onMessage)
  socket.on('pong', onPong)
  if (pings) socket.on('ping', onPing)
  socket.on('error', onError)
  socket.on('close', onClose)
  const reader = (socket as { _receiver?: unknown })._receiver
  if (reader instanceof EventEmitter) {
    bySocket.set(reader, events)
    reader.on('conclude', onClose)
  }
}

/** A client frame's data as one Buffer, whatever form ws gave it in. */
export function toBuffer (data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data
  if (Array.isArray(data)) return Buffer.concat(data)
  return Buffer.from(data)
}
