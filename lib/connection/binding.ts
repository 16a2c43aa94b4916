/**
 * How an accepted handshake reaches the upgrade: ws' subprotocol choice, the route handler and the
 * test kit see only the raw request (`request.raw`), so the connection is found by it — in a
 * WeakMap, never as a property on Node's or Fastify's objects.
 */
import type { Connection } from './connection.js'

const byRequest = new WeakMap<object, Connection>()

export function bindToRequest (raw: object, connection: Connection): void {
  byRequest.set(raw, connection)
}

export function connectionOf (raw: object): Connection | undefined {
  return byRequest.get(raw)
}
