/**
 * How an accepted handshake reaches the upgrade: ws' subprotocol choice, the route handler and the
 * test kit see only the raw request (`request.raw`), so the connection is found by it — in a
 * WeakMap, never as a property on Node's or Fastify's objects.
 */
import type { Connection } from './connection.js'

const byRequest = new WeakMap<object, Connection>()
// Requests whose upgrade state (internals.ts) may be let go: fastify-channels registered
// @fastify/websocket itself, so its error listener calls nothing the app set up.
const releasable = new WeakSet<object>()

export function bindToRequest (raw: object, connection: Connection, releaseUpgrade: boolean): void {
  byRequest.set(raw, connection)
  if (releaseUpgrade) releasable.add(raw)
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
