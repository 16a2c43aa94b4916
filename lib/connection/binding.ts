/**
 * How an accepted handshake reaches the upgrade: ws' subprotocol choice, the route handler and the
 * test kit see only the raw request (`request.raw`), so the connection is found by it — in a
 * WeakMap, never as a property on Node's or Fastify's objects.
 */
import type { Connection } from './connection.js'

const byRequest = new WeakMap<object, Connection>()
// The test kit's handshakes (marked, internals.ts) → their connection, from its start: a refused
// one is never bound to its request, and the kit still waits for it to finish.
const byInjection = new WeakMap<object, Connection>()
// Requests whose upgrade state (internals.ts) may be let go: fastify-channels registered
// @fastify/websocket itself, so its error listener calls nothing the app set up.
const releasable = new WeakSet<object>()

export function bindToRequest (raw: object, connection: Connection, releaseUpgrade: boolean): void {
  byRequest.set(raw, connection)
  if (releaseUpgrade) releasable.add(raw)
}

/** A connection's handshake starts: a test kit's (its marker) is noted. */
export function noteHandshake (marker: unknown, connection: Connection): void {
  if (typeof marker === 'object' && marker !== null) byInjection.set(marker, connection)
}

/** The connection a test kit's handshake, marked with `marker`, made. */
export function connectionOfInjection (marker: object): Connection | undefined {
  return byInjection.get(marker)
}

export function mayReleaseUpgrade (raw: object): boolean {
  return releasable.has(raw)
}

export function connectionOf (raw: object): Connection | undefined {
  return byRequest.get(raw)
}

/**
 * The route handler has the socket: the request is not looked up again. Its entries go, so that
 * these tables hold the handshakes in progress, not one entry per open connection (the request
 * lives as long as its scope).
 */
export function unbindRequest (raw: object): void {
  byRequest.delete(raw)
  releasable.delete(raw)
}
