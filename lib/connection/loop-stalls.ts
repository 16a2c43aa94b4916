/**
 * How long this process' event loop has been held up, in all: a long synchronous task, a long
 * collection pause. A timer that should fire every TICK_MS adds what it came late by. What the
 * socket of a client sent meanwhile is read together once the loop runs again, so the rate limit
 * does not charge it as a burst (rate-limit.ts). A stall still under way when a socket is read
 * (the reads of the turn right after it come before the timer) counts too.
 */
const TICK_MS = 100

let lastTick = 0
let stalledMs = 0
let watching = false

/** Milliseconds the loop has been held up since the watch began (it begins with the first call). */
export function loopStalledMs (): number {
  const now = performance.now()
  if (!watching) {
    watching = true
    lastTick = now
    setInterval(() => {
      const at = performance.now()
      stalledMs += Math.max(0, at - lastTick - TICK_MS)
      lastTick = at
    }, TICK_MS).unref()
  }
  return stalledMs + Math.max(0, now - lastTick - TICK_MS)
}
