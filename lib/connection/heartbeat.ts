/**
 * The heartbeat: every connection is pinged once per `interval`, and one that has not answered
 * the previous ping is terminated (`disconnect(1006)`). Pinging 10,000 sockets in one go stalls
 * every other delivery for as long as the writes (and then the pongs) take, so the connections
 * are spread over slices, one slice per tick of `interval / slices`: each connection still sees
 * one ping per interval, and a tick touches a fraction of them.
 */

export interface Beating {
  /** Which tick of the interval pings this connection. */
  readonly heartbeatSlot: number
  heartbeat (): void
}

// A tick every quarter second, at most this many slices: 30 s → 120 ticks, each for 1/120th.
const TICK_MS = 250
const MAX_SLICES = 120

function slicesFor (interval: number): number {
  return Math.max(1, Math.min(MAX_SLICES, Math.floor(interval / TICK_MS)))
}

let nextSlot = 0

/** A slot for a new connection: round robin, so slices stay even as connections come and go. */
export function heartbeatSlot (): number {
  nextSlot = (nextSlot + 1) % MAX_SLICES
  return nextSlot
}

/** Starts the heartbeat over `connections` (read at each tick); returns what stops it. */
export function startHeartbeat (connections: Iterable<Beating>, interval: number): () => void {
  const slices = slicesFor(interval)
  let tick = 0
  const timer = setInterval(() => {
    const slice = tick
    tick = (tick + 1) % slices
    for (const connection of connections) {
      if (connection.heartbeatSlot % slices === slice) connection.heartbeat()
    }
  }, interval / slices)
  timer.unref()
  return () => clearInterval(timer)
}
