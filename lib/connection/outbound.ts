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
 * the socket and shuts it as soon as it starts closing. Before that, so each early or late send
 * gets what it should: before `accept()` (a send in `connect()` that comes first) the data is
 * dropped and logged at debug; once `accept()` has been called and until the socket is there (an
 * `accept()` not awaited), it waits, and goes out first, in order; once shut, `send()` throws
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
  // Sent after accept() was called, before the socket was there: written first once it is.
  #early: Array<string | Uint8Array> | null = null

  constructor (owner: OutboundOwner, maxBufferedBytes: number, counts: Pick<RouteCounts, 'framesSent' | 'slowReaders'>) {
    this.#owner = owner
    this.#maxBufferedBytes = maxBufferedBytes
    this.#counts = counts
  }

  /** `accept()` was called: what is sent until the socket is there waits for it. */
  expect (): void {
    this.#early ??= []
  }

  /** Data may be written to `socket` from now on; what waited for it goes first. */
  open (socket: WritableSocket): void {
    this.#socket = socket
    this.#writer = frameWriterOf(socket)
    const early = this.#early
    this.#early = null
    if (early !== null) for (const data of early) this.send(data)
  }

  /** Nothing more is written; later sends throw ConnectionClosedError. */
  shut (): void {
    this.flush()
    this.#socket = null
    this.#writer = null
    this.#early = null
    this.#shut = true
  }

  send (data: string | Uint8Array): void {
    const socket = this.#socket
    if (socket === null) {
      if (this.#shut) throw new ConnectionClosedError(this.#owner.channelName, 'nothing more can be sent')
      if (this.#early !== null) this.#early.push(data)
      // The app's mistake, which Channels raises for: said where an app's logs are read.
      else this.#owner.log.warn({ channel: this.#owner.channelName }, 'send() before accept(): dropped (accept() first)')
      return
    }
    if (typeof data === 'string' && this.#writer !== null) {
      const frame = sharedTextFrame(data)
      if (frame !== undefined) {
        if (this.#queuedThisTurn()) {
          let more = this.#more
          if (more === null) more = this.#more = [frame, data]
          else more.push(frame, data)
          // A burst to one socket is written every MAX_BATCH frames, so the slow-reader limit sees it.
          if (1 + (more.length >> 1) >= MAX_BATCH) this.flush()
          return
        }
        // Most connections write one frame per turn: it waits in the turn's list itself, with no
        // array of its own (and none left from a turn whose writes threw).
        this.#queuedAt = pending.push(this, frame, data) - 3
        this.#more = null
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

  /**
   * Undefined while the socket is not congested (no more than half of `maxBufferedBytes` waits in
   * it); else resolves once it is not (checked every DRAIN_CHECK_MS), or once nothing more can be
   * written here (a send then throws as usual). So what would be written at once — a replay, what
   * waited behind it (flow-control.ts), a read-back of missed messages — goes at the pace the client
   * reads, instead of closing it as a slow reader.
   */
  whenUncongested (): Promise<void> | undefined {
    if (!this.#congested()) return undefined
    return new Promise(resolve => {
      const check = (): void => {
        if (this.#congested()) setTimeout(check, DRAIN_CHECK_MS)
        else resolve()
      }
      setTimeout(check, DRAIN_CHECK_MS)
    })
  }

  // Counts the frames batched for the end of the turn too: a catch-up handed over in one turn is
  // all there, and the socket's buffer alone would show none of it until the turn's writes.
  #congested (): boolean {
    const socket = this.#socket
    return socket !== null && socket.bufferedAmount + this.#batchedBytes() > this.#maxBufferedBytes / 2
  }

  /** The bytes of the frames waiting for the end of the turn (read only here, off the send path). */
  #batchedBytes (): number {
    if (!this.#queuedThisTurn()) return 0
    let bytes = frameBytes(pending[this.#queuedAt + 1] as Buffer[])
    const more = this.#more
    if (more !== null) for (let i = 0; i < more.length; i += 2) bytes += frameBytes(more[i] as Buffer[])
    return bytes
  }

  /** A slow reader: closed (1008), counted and logged; true when it is one. */
  #overLimit (socket: WritableSocket): boolean {
    if (socket.bufferedAmount <= this.#maxBufferedBytes) return false
    this.#counts.slowReaders++
    this.#owner.log.warn({ channel: this.#owner.channelName, bufferedAmount: socket.bufferedAmount }, 'slow reader: outgoing buffer over the limit, closing')
    this.#owner.close(1008, SLOW_READER_REASON)
    return true
  }

  // Where this socket's first frame of the current turn waits: the index of its entry in
  // `pending`, or -1. An index rather than the entry: an old object pointing to a new one costs V8
  // a write barrier and a remembered-set entry, at every send.
  #queuedAt = -1
  // The socket's further frames of the turn, each with its text (a burst only).
  #more: Array<Buffer[] | string> | null = null

  /** Whether this socket has frames waiting for the end of the current turn. */
  #queuedThisTurn (): boolean {
    const at = this.#queuedAt
    return at >= 0 && pending[at] === this
  }

  /** Writes the frames batched for this socket, in order. */
  flush (): void {
    if (!this.#queuedThisTurn()) return
    const at = this.#queuedAt
    const frame = pending[at + 1] as Buffer[]
    const text = pending[at + 2] as string
    pending[at] = pending[at + 1] = pending[at + 2] = null
    this.#queuedAt = -1
    this.#write(frame, text)
  }

  /**
   * Every socket's frames of the turn, in the order the sockets got their first frame. The list
   * stays the current one until all are written: a send made meanwhile (from a write's own
   * callbacks) joins its socket's frames still waiting, or is a new entry at the end, so no
   * socket's frames can pass each other.
   */
  static #flushAll (): void {
    try {
      for (let i = 0; i < pending.length; i += 3) {
        const outbound = pending[i] as Outbound | null
        if (outbound === null) continue
        outbound.#queuedAt = -1
        outbound.#write(pending[i + 1] as Buffer[], pending[i + 2] as string)
      }
    } finally {
      pending = []
      flushing = false
    }
  }

  /** Writes the socket's first frame of the turn and the others after it. */
  #write (frame: Buffer[], text: string): void {
    const more = this.#more
    this.#more = null
    const socket = this.#socket
    const writer = this.#writer
    if (socket === null || writer === null) return
    // The limit is read here, where the socket is written anyway, rather than at each send: it
    // bounds the same thing (a batch is not in the socket's buffer until now) and the handler
    // phase touches the socket one time fewer.
    if (this.#overLimit(socket)) return
    if (more === null) {
      this.#counts.framesSent++
      writeOne(socket, writer, frame, text)
      return
    }
    this.#counts.framesSent += 1 + (more.length >> 1)
    // Several frames: one write to the TCP socket for all of them.
    corked(writer, () => {
      writeOne(socket, writer, frame, text)
      for (let i = 0; i < more.length; i += 2) writeOne(socket, writer, more[i] as Buffer[], more[i + 1] as string)
    })
  }
}

/** One frame as it is, or through `ws.send()` when it cannot be written as it is. */
function writeOne (socket: WritableSocket, writer: FrameWriter, frame: Buffer[], text: string): void {
  if (!writeFrame(socket, writer, frame)) socket.send(text)
}

// Shared frames are written once the current turn of the event loop has run its callbacks and
// the promise jobs they started (setImmediate), every socket's in one loop: a group message's
// writes then follow each other (the kernel's write path stays warm) instead of alternating with
// each member's handler, and the frames a socket got in that turn (a burst: several group messages
// in one tick, or read from Redis in one chunk, each run through its async handler) leave in one
// system call. A socket's other sends, and its close, flush it first.
const MAX_BATCH = 32
// How often a wait for a congested socket looks whether it has drained.
const DRAIN_CHECK_MS = 5
// The sockets' first frames of the turn, three entries each: the Outbound (null once it wrote them
// early), the frame and its text (for ws.send() when the frame cannot be written as it is). A new
// list each turn, so that what it holds is as young as it is (no write barrier).
let pending: Array<Outbound | Buffer[] | string | null> = []
let flushing = false

function frameBytes (frame: Buffer[]): number {
  let bytes = 0
  for (const part of frame) bytes += part.length
  return bytes
}

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
