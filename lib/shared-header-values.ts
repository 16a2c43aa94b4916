/**
 * Header values that many clients send alike (`upgrade: websocket`, a browser's `user-agent` and
 * `accept-language`, the page's `origin`, the `host`) are held once per process instead of once
 * per connection. A connection keeps its request's headers (`scope.headers`) for as long as it
 * lives, and each request brings its own copy of every string: with 20,000 connections from one
 * kind of browser, the same strings would be held 20,000 times (about 0.2 KiB per connection with
 * `ws`' own client, several times that with a browser's headers).
 *
 * Only headers that are alike across clients are shared: a value unique to each connection (its
 * key, its cookies) would only grow the table. The table is bounded: once full it learns no new
 * values (those it holds are still shared), so a client sending random values costs at most the
 * table, and no connection ever holds more than it would without it. Strings are values in
 * JavaScript: a header reads the same whichever copy it holds.
 */
import type { IncomingHttpHeaders } from 'node:http'

const ALIKE = [
  'host', 'connection', 'upgrade', 'origin', 'user-agent', 'accept', 'accept-encoding', 'accept-language',
  'cache-control', 'pragma', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-protocol',
  'sec-fetch-dest', 'sec-fetch-mode', 'sec-fetch-site', 'x-forwarded-proto', 'x-forwarded-host'
] as const
const MAX_VALUES = 1024
const MAX_LENGTH = 512

const held = new Map<string, string>()

/** Replaces each alike header's value with the process's copy of the same text. */
export function shareHeaderValues (headers: IncomingHttpHeaders): void {
  for (const name of ALIKE) {
    const value = headers[name]
    if (typeof value !== 'string' || value.length > MAX_LENGTH) continue
    const shared = held.get(value)
    if (shared !== undefined) headers[name] = shared
    else if (held.size < MAX_VALUES) held.set(value, value)
  }
}

/** How many values are held (for tests). */
export function sharedHeaderValueCount (): number {
  return held.size
}
