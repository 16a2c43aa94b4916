/**
 * What `send()` does with a consumer's data: a string goes out as one text frame, bytes as one
 * binary frame, written before the event loop next waits (no promise per frame). Two policies:
 *
 * - A slow reader (more than `maxBufferedBytes` waiting in its socket) is closed with 1008 instead
 *   of buffering without bound.
 * - Shared frames: consecutive sends of one text are framed once and the same bytes written to
 *   each socket (shared-encoding.ts), through ws' frame writer where `ws.send()` would write
 *   exactly that (see internals.ts).
 *
 * Data is written only while the connection is open: the connection opens its outbound side with
 * the socket and shuts it as soon as it starts closing. Three states, so each late send gets what
 * it should: before the socket is there (a send in `connect()` before `accept()`) the data is
 * dropped and logged at debug; once shut, `send()` throws
 * ConnectionClosedError, so that code still sending to a connection that ended (a loop in
 * `connect()`, a spawned task) stops instead of running for the life of the process.
 */
import type { Reporter } from './tasks.js'
import { corked, frameWriterOf, writeFrame, type FrameWriter } from '../internals.js'
import { ConnectionClosedError } from '../errors.js'
import { encodedOnce } from './shared-encoding.js'
import type { RouteCounts } from '../metrics.js'

/** The part of a socket data is written to (ws' WebSocket has it). */
export interface WritableSocket {
  readonly bufferedAmount: number
  readonly readyState: number
  send (data: string | Uint8Array): void
  send (data: string | Uint8Array, options: { binary: boolean }): void
}

export interface OutboundOwner extends Reporter {
  close (code: number, reason: string): void
}

const BINARY = { binary: true }

/** The reason a slow reader is closed with (1008): an HTTP response then drops its socket (response-socket.ts). */
export const SLOW_READER_REASON = 'slow reader: too much data queued'

/** The frame of the last text sent, built again only when the text changes. */
const sharedTextFrame = encodedOnce(text => [textFrame(text)])

export class Outbound {
  readonly #owner: OutboundOwner
  readonly #maxBufferedBytes: number
  readonly #counts: Pick<RouteCounts, 'framesSent' | 'slowReaders'>
  #socket: WritableSocket | null = null
  #writer: FrameWriter | null = null
  #shut = false

  constructor (owner: OutboundOwner, maxBufferedBytes: number, counts: Pick<RouteCounts, 'framesSent' | 'slowReaders'>) {
    this.#owner = owner
    this.#maxBufferedBytes = maxBufferedBytes
    this.#counts = counts
  }

  /** Data may be written to `socket` from now on. */
  open (socket: WritableSocket): void {
    this.#socket = socket
    this.#writer = frameWriterOf(socket)
  }

  /** Nothing more is written; later sends throw ConnectionClosedError. */
  shut (): void {
    this.flush()
    this.#socket = null
    this.#writer = null
    this.#shut = true
  }

  send (data: string | Uint8Array): void {
    const socket = this.#socket
    if (socket === null) {
      if (this.#shut) throw new ConnectionClosedError(this.#owner.channelName, 'nothing more can be sent')
      this.#owner.log.debug({ channel: this.#owner.channelName }, 'send() on a connection that is not open; dropped')
      return
    }
    if (typeof data === 'string' && this.#writer !== null) {
      const frame = sharedTextFrame(data)
      if (frame !== undefined) {
        const batch = this.#batchOfTurn()
        if (batch !== undefined) {
          batch.push(frame, data)
          // A burst to one socket is written every MAX_BATCH frames, so the slow-reader limit sees it.
          if (batch.length > 2 * MAX_BATCH) this.flush()
          return
        }
        // Most connections write one frame per turn: an array of exactly it (an empty one would
        // grow room for 17 at its first push).
        this.#batchAt = pending.push([this, frame, data]) - 1
        if (!flushing) {
          flushing = true
          setImmediate(Outbound.#flushAll)
        }
        return
      }
    }
    this.flush()
    // The flush may have found a slow reader and closed it: then this is not written either.
    if (this.#socket === null || this.#overLimit(socket)) return
    this.#counts.framesSent++
    if (typeof data === 'string') socket.send(data)
    else socket.send(data, BINARY)
  }

  /** A slow reader: closed (1008), counted and logged; true when it is one. */
  #overLimit (socket: WritableSocket): boolean {
    if (socket.bufferedAmount <= this.#maxBufferedBytes) return false
    this.#counts.slowReaders++
    this.#owner.log.warn({ channel: this.#owner.channelName, bufferedAmount: socket.bufferedAmount }, 'slow reader: outgoing buffer over the limit, closing')
    this.#owner.close(1008, SLOW_READER_REASON)
    return true
  }

  // Where this socket's frames of the current turn wait: the index of its batch in `pending`, or
  // -1. An index rather than the batch itself: an old object pointing to a new one costs V8 a
  // write barrier and a remembered-set entry, at every send.
  #batchAt = -1

  /** This socket's batch of the current turn, if it has one. */
  #batchOfTurn (): Batch | undefined {
    const at = this.#batchAt
    if (at < 0) return undefined
    const batch = pending[at]
    return batch !== undefined && batch !== null && batch[0] === this ? batch : undefined
  }

  /** Writes the frames batched for this socket, in order. */
  flush (): void {
    const batch = this.#batchOfTurn()
    if (batch === undefined) return
    pending[this.#batchAt] = null
    this.#batchAt = -1
    this.#write(batch)
  }

  /**
   * Every socket's batch of the turn, in the order the sockets got their first frame. The list
   * stays the current one until all are written: a send made meanwhile (from a write's own
   * callbacks) joins its socket's batch still waiting, or a new one at the end, so no socket's
   * frames can pass each other.
   */
  static #flushAll (): void {
    try {
      for (let i = 0; i < pending.length; i++) {
        const batch = pending[i]
        if (batch === null) continue
        const outbound = batch[0] as Outbound
        outbound.#batchAt = -1
        outbound.#write(batch)
      }
    } finally {
      pending = []
      flushing = false
    }
  }

  #write (batch: Batch): void {
    const socket = this.#socket
    const writer = this.#writer
    if (socket === null || writer === null) return
    // The limit is read here, where the socket is written anyway, rather than at each send: it
    // bounds the same thing (a batch is not in the socket's buffer until now) and the handler
    // phase touches the socket one time fewer.
    if (this.#overLimit(socket)) return
    this.#counts.framesSent += (batch.length - 1) >> 1
    // Several frames: one write to the TCP socket for all of them.
    if (batch.length === 3) writeBatch(socket, writer, batch)
    else corked(writer, () => { writeBatch(socket, writer, batch) })
  }
}

/** A batch's frames in order; a frame that cannot be written as it is goes through `ws.send()`. */
function writeBatch (socket: WritableSocket, writer: FrameWriter, batch: Batch): void {
  for (let i = 1; i < batch.length; i += 2) {
    if (!writeFrame(socket, writer, batch[i] as Buffer[])) socket.send(batch[i + 1] as string)
  }
}

// Shared frames are written once the current turn of the event loop has run its callbacks and
// the promise jobs they started (setImmediate), every socket's in one loop: a group message's
// writes then follow each other (the kernel's write path stays warm) instead of alternating with
// each member's handler, and the frames a socket got in that turn (a burst: several group messages
// in one tick, or read from Redis in one chunk, each run through its async handler) leave in one
// system call. A socket's other sends, and its close, flush it first.
const MAX_BATCH = 32
// A socket's frames of the turn: the Outbound, then each frame with its text (for ws.send() when
// the frame cannot be written as it is). A new list each turn, so that what it holds is as young
// as it is (no write barrier).
type Batch = Array<Outbound | Buffer[] | string>
let pending: Array<Batch | null> = []
let flushing = false

/** One unmasked, unfragmented text frame (RFC 6455 §5.2), header and payload in one Buffer. */
function textFrame (text: string): Buffer {
  const length = Buffer.byteLength(text)
  const header = length < 126 ? 2 : length < 65536 ? 4 : 10
  const frame = Buffer.allocUnsafe(header + length)
  frame[0] = 0x81 // FIN, opcode 1 (text)
  if (header === 2) {
    frame[1] = length
  } else if (header === 4) {
    frame[1] = 126
    frame.writeUInt16BE(length, 2)
  } else {
    frame[1] = 127
    frame.writeUInt16BE(0, 2)
    frame.writeUIntBE(length, 4, 6)
  }
  frame.write(text, header, 'utf8')
  return frame
}
