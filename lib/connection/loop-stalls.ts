/**
 * How long this process' event loop has been held up, in all: a long synchronous task, a long
 * collection pause. A timer that should fire every TICK_MS adds what it came late by, when that is
 * STALL_MS or more. What the socket of a client sent meanwhile is read together once the loop runs
 * again, so the rate limit does not charge it as a burst (rate-limit.ts). A stall still under way
 * when a socket is read (the reads of the turn right after it come before the timer) counts too.
 *
 * Shorter delays are the lag of a busy loop, not stalls: a client's frames read together after one
 * fit in the bucket's burst (a second's worth), and a flood that lags the loop earns nothing by it.
 */
const TICK_MS = 100
const STALL_MS = 250

let lastTick = 0
let stalledMs = 0
let watching = false

/** What a tick that comes at `at` was held up by, if that is a stall. */
function stall (at: number): number {
  const late = at - lastTick - TICK_MS
  return late >= STALL_MS ? late : 0
}

/** Milliseconds the loop has been held up since the watch began (it begins with the first call). */
export function loopStalledMs (): number {
  const now = performance.now()
  if (!watching) {
    watching = true
    lastTick = now
    setInterval(() => {
      const at = performance.now()
      stalledMs += stall(at)
      lastTick = at
    }, TICK_MS).unref()
  }
  return stalledMs + stall(now)
}
