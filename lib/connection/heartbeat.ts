/**
 * The heartbeat: every connection is pinged once per `interval`, and one that has not answered
 * the previous ping is terminated (`disconnect(1006)`).
 *
 * The scheduler: pinging 10,000 sockets in one go stalls every other delivery for as long as the
 * writes (and then the pongs) take, so the connections are spread over slices, one slice per tick
 * of `interval / slices`: each connection still sees one ping per interval, and a tick touches a
 * fraction of them.
 *
 * The policy, per connection and tick: `beat()`.
 */
import type { ConnectionSet, Slotted } from './connection-set.js'

export interface Beating extends Slotted {
  /** Only an open connection is pinged. */
  readonly isOpen: boolean
  /** While reading is paused for backpressure a pong cannot be read either. */
  readonly readsPaused: boolean
  /** Set when a ping is sent; the connection clears it when the pong arrives. */
  awaitingPong: boolean
  sendPing (): void
  /** Ends a peer that stopped answering: no close handshake, `disconnect(1006)`. */
  terminate (): void
}

// A tick every quarter second, at most this many slices: 30 s → 120 ticks, each for 1/120th.
const TICK_MS = 250
export const MAX_SLICES = 120

function slicesFor (interval: number): number {
  return Math.max(1, Math.min(MAX_SLICES, Math.floor(interval / TICK_MS)))
}

let nextSlot = 0

/** A slot for a new connection: round robin, so slices stay even as connections come and go. */
export function heartbeatSlot (): number {
  nextSlot = (nextSlot + 1) % MAX_SLICES
  return nextSlot
}

/** Starts the heartbeat over `connections` (a tick reads its slice of them); returns what stops it. */
export function startHeartbeat (connections: ConnectionSet<Beating>, interval: number): () => void {
  const slices = slicesFor(interval)
  let tick = 0
  const timer = setInterval(() => {
    const slice = tick
    tick = (tick + 1) % slices
    connections.forEachInSlice(slice, slices, beat)
  }, interval / slices)
  timer.unref()
  return () => clearInterval(timer)
}

/**
 * One connection's turn: terminate a peer that did not answer the last ping, else ping it. A peer
 * whose reads are paused is not blamed: its pong may be waiting unread.
 */
export function beat (connection: Beating): void {
  if (!connection.isOpen) return
  if (connection.readsPaused) {
    connection.awaitingPong = false
  } else if (!connection.awaitingPong) {
    ping(connection)
  } else {
    // A tick can fire late, straight after this process was busy, before the event loop has read
    // a pong that is already waiting: judge only after two turns of reading (two, so that even a
    // client in this same process has had one turn to answer and we one to read it).
    setImmediate(() => setImmediate(() => {
      if (!connection.isOpen) return
      if (connection.awaitingPong && !connection.readsPaused) connection.terminate()
      else ping(connection)
    }))
  }
}

function ping (connection: Beating): void {
  connection.awaitingPong = true
  connection.sendPing()
}
