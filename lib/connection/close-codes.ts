/**
 * WebSocket close codes and reasons (RFC 6455 §7.4), as the connection sends and reports them,
 * and how long a peer has to complete the closing handshake.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { ConnectionSocket } from './socket.js'
import { InvalidOptionError } from '../errors.js'

/** Codes an endpoint may send in a close frame. */
function isSendableCloseCode (code: number): boolean {
  return Number.isInteger(code) &&
    ((code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
      (code >= 3000 && code <= 4999))
}

/** Throws InvalidOptionError for a code that no close frame may carry. */
export function checkSendableCloseCode (code: number): void {
  if (typeof code !== 'number') throw new InvalidOptionError(`close(code): the code must be a number, got ${code === null ? 'null' : typeof code}`)
  if (!isSendableCloseCode(code)) throw new InvalidOptionError(`close code ${String(code)} cannot be sent; use 1000-1014 or 3000-4999`)
}

/** Close reasons are limited to 123 bytes of UTF-8; cut on a character boundary. */
export function fitCloseReason (reason: string): string {
  if (Buffer.byteLength(reason) <= 123) return reason
  let cut = reason.slice(0, 123)
  while (Buffer.byteLength(cut) > 120) cut = cut.slice(0, -1)
  // Not half of a surrogate pair (an emoji), which would go out as U+FFFD.
  if (/[\uD800-\uDBFF]$/.test(cut)) cut = cut.slice(0, -1)
  return cut + '...'
}

/** The close code ws sends for each of its protocol errors; other errors mean the connection is lost. */
export function protocolErrorCloseCode (code: string | undefined): number {
  if (code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') return 1009
  if (code === 'WS_ERR_INVALID_UTF8') return 1007
  if (code?.startsWith('WS_ERR_') === true) return 1002
  return 1006 // a network error: the connection is simply gone
}

/**
 * How long a peer has, once its connection starts to close, to complete the closing handshake
 * (answer the close frame and end its side); then its socket is dropped. ws alone waits 30 s and
 * meanwhile keeps what was queued for the peer: for a reader closed for being slow (1008), up to
 * `maxBufferedBytes`, for 30 s per connection an attacker opens. Long enough for a client on a
 * slow link to read a modest backlog and the close frame after it.
 */
export const CLOSING_HANDSHAKE_GRACE_MS = 5000

type ClosingSocket = Pick<ConnectionSocket, 'readyState' | 'terminate'>

/** Whether `socket` sent or answered a close frame and waits for the rest of the closing handshake. */
export function isClosing (socket: Pick<ConnectionSocket, 'readyState'>): boolean {
  return socket.readyState === 2 // ws' WebSocket.CLOSING
}

/** Drops `socket` if its closing handshake is still under way once the grace is over. */
export function dropIfStillClosing (socket: ClosingSocket, log: FastifyBaseLogger, channel: string): void {
  if (!isClosing(socket)) return
  setTimeout(dropUnanswered, CLOSING_HANDSHAKE_GRACE_MS, socket, log, channel).unref()
}

function dropUnanswered (socket: ClosingSocket, log: FastifyBaseLogger, channel: string): void {
  if (!isClosing(socket)) return
  log.debug({ channel, graceMs: CLOSING_HANDSHAKE_GRACE_MS }, 'peer did not complete the closing handshake in time; socket dropped')
  socket.terminate()
}
