/**
 * The plugin's part of `app.close()`: every connection closes with 1001 (or ends, if not yet
 * upgraded), upgrades still in the app's hooks are answered, peers that do not answer the close
 * frame are dropped; each bounded by a grace, so that nothing stuck holds the process' stop.
 */
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type { WebSocketServer } from 'ws'
import type { Connection } from './connection/connection.js'
import type { ConnectionSet } from './connection/connection-set.js'
import type { UnansweredUpgrades } from './connection/unanswered-upgrades.js'
import { CLOSING_HANDSHAKE_GRACE_MS, isClosing } from './connection/close-codes.js'

/** What the plugin keeps for one app's shutdown. */
export interface ShutdownState {
  connections: ConnectionSet<Connection>
  /** `app.close()` has begun: a new handshake gets 503. */
  closing: boolean
  /** The connections' end, once `app.close()` has begun (its hooks share it). */
  shutdown?: Promise<void>
  stopHeartbeat: () => void
  /** Upgrades still in the app's hooks, answered 503 if they still are after the shutdown grace. */
  upgrades?: UnansweredUpgrades
}

/**
 * How long `app.close()` waits for consumers still in `connect()` or `disconnect()` (their
 * `signal` aborted): as long as a peer has to answer the close frame. Daphne's
 * `application_close_timeout` does the same; Fastify fails a close hook that takes 10 s.
 */
export const SHUTDOWN_GRACE_MS = CLOSING_HANDSHAKE_GRACE_MS

/** Whether `work` settled within SHUTDOWN_GRACE_MS: what shutdown waits for, at most. */
export async function withinGrace (work: Promise<unknown>): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const late = await Promise.race([
    work.then(() => false),
    new Promise<boolean>(resolve => { timer = setTimeout(resolve, SHUTDOWN_GRACE_MS, true) })
  ])
  clearTimeout(timer)
  return !late
}

/**
 * Every connection closes with 1001 (or ends, if not yet upgraded); resolves once each has
 * finished, or after SHUTDOWN_GRACE_MS for those whose connect() or disconnect() never returns
 * (logged): a stuck consumer must not hold the process' stop forever. Once per app.
 */
export function shutdownConnections (channels: ShutdownState, log: FastifyBaseLogger): Promise<void> {
  channels.shutdown ??= endConnections(channels, log)
  return channels.shutdown
}

async function endConnections (channels: ShutdownState, log: FastifyBaseLogger): Promise<void> {
  channels.closing = true
  channels.stopHeartbeat()
  await Promise.all([endOpenConnections(channels, log), endUnansweredUpgrades(channels, log)])
}

/**
 * A hook that never returns (a session store that hangs) holds its upgrade's socket open, and
 * the server's close with it: those still unanswered after the grace get a 503.
 */
async function endUnansweredUpgrades (channels: ShutdownState, log: FastifyBaseLogger): Promise<void> {
  const upgrades = channels.upgrades
  if (upgrades === undefined || await withinGrace(upgrades.answered())) return
  const refused = upgrades.refuseAll()
  if (refused > 0) {
    log.warn({ requests: refused, graceMs: SHUTDOWN_GRACE_MS },
      'shutdown: upgrade requests still in the app\'s hooks after the grace (a hook that never returns); answered 503 and closed')
  }
}

async function endOpenConnections (channels: ShutdownState, log: FastifyBaseLogger): Promise<void> {
  const open = [...channels.connections]
  for (const connection of open) connection.shutdown()
  const finished = new Set<Connection>()
  if (!await withinGrace(Promise.all(open.map(async c => { await c.finished; finished.add(c) })))) {
    const late = open.filter(c => !finished.has(c))
    for (const connection of late) connection.stopWaiting()
    log.warn({ connections: late.length, graceMs: SHUTDOWN_GRACE_MS },
      'shutdown: consumers still in connect(), a handler or disconnect() after the grace; not waiting for them')
    return
  }
  // An ended response whose body a reader has not taken in yet: it leaves before the server
  // closes its idle connections, which would cut it off. The closing grace bounds the wait; the
  // responses it cut off are counted in one warning, as the WebSocket peers it drops are.
  const drained = await Promise.all(open.map(c => c.drained))
  const cutOff = drained.filter(left => !left).length
  if (cutOff > 0) {
    log.warn({ responses: cutOff, graceMs: CLOSING_HANDSHAKE_GRACE_MS },
      'shutdown: readers did not take the rest of their response in time; their responses are cut off')
  }
}

/**
 * At shutdown, the sockets of the WebSocket server that are not a consumer's (the app's own
 * routes') are sent 1001 at once; a consumer's is closed by its connection (`shutdown()`), once
 * the handler it has in hand has finished.
 */
export function closeAppSockets (wss: WebSocketServer, connections: Iterable<Connection>): void {
  const consumers = new Set<unknown>()
  for (const connection of connections) consumers.add(connection.socket)
  for (const client of wss.clients) if (!consumers.has(client)) client.close(1001, 'server shutting down')
}

/**
 * A socket an app's own `@fastify/websocket` closes at shutdown (its preClose, before the
 * plugin's): when it is a consumer's, the connection shuts down as the plugin's shutdown would
 * have it (true); else false. The sockets are looked up in one table made for the whole loop.
 */
export function consumerShutdown (connections: Iterable<Connection>): (socket: unknown) => boolean {
  let bySocket: Map<unknown, Connection> | null = null
  return socket => {
    if (bySocket === null) {
      const table = bySocket = new Map()
      for (const connection of connections) if (connection.socket !== null) table.set(connection.socket, connection)
      queueMicrotask(() => { bySocket = null })
    }
    const connection = bySocket.get(socket)
    connection?.shutdown()
    return connection !== undefined
  }
}

/**
 * At shutdown, the sockets whose peer has not answered the close frame within the grace every
 * closing connection has (close-codes.ts; a peer that stopped reading, a network that vanished)
 * are dropped, the app's own sockets too, and counted in one warning; a socket the app leaves
 * open is not. Without it, ws waits 30 s for each closing handshake, and `app.close()` with it:
 * as long as a process manager's whole stop timeout. A consumer's `disconnect()` has run by then
 * (with 1001); only its TCP socket was still open.
 */
export function dropUnansweredCloses (wss: WebSocketServer, log: FastifyInstance['log']): void {
  if (wss.clients.size === 0) return
  const timer = setTimeout(() => {
    const unanswered = [...wss.clients].filter(isClosing)
    if (unanswered.length === 0) return
    log.warn({ sockets: unanswered.length, graceMs: CLOSING_HANDSHAKE_GRACE_MS }, 'shutdown: peers did not answer the close frame in time; their sockets are dropped')
    for (const socket of unanswered) socket.terminate()
  }, CLOSING_HANDSHAKE_GRACE_MS)
  timer.unref()
  wss.once('close', () => { clearTimeout(timer) })
}
