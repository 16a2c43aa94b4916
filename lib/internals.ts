/**
 * Every place fastify-channels relies on behaviour of Fastify, @fastify/websocket, ws or Node's
 * http module that they do not document as API. Each reach says why it is needed and is guarded by
 * the major version it was written for (read once from the installed packages; Node's by the shape
 * of what it reads): where the product cannot do without it, another version fails `register`
 * with a clear InvalidOptionError; elsewhere the reach is skipped and the documented path is taken.
 *
 * Nothing else in lib/ touches a private field, a symbol or an error message of those packages.
 */
import { createRequire } from 'node:module'
import { OutgoingMessage, type IncomingMessage } from 'node:http'
import { Socket } from 'node:net'
import type { FastifyInstance, RouteOptions } from 'fastify'
import type { WebSocket, WebSocketServer } from 'ws'
import { InvalidOptionError } from './errors.js'

/** The major version of each package the reaches below were written for. */
const WRITTEN_FOR = { fastify: 5, ws: 8, '@fastify/websocket': 11 } as const

type Package = keyof typeof WRITTEN_FOR

const installed = new Map<Package, number | undefined>()

/**
 * The installed major version; ws as @fastify/websocket loads it. Undefined when it cannot be read
 * (a bundled app): the reaches then rely on their structural checks alone.
 */
function installedMajor (name: Package): number | undefined {
  if (!installed.has(name)) {
    let major: number | undefined
    try {
      const require = createRequire(import.meta.url)
      const from = name === 'ws' ? createRequire(require.resolve('@fastify/websocket')) : require
      major = Number.parseInt((from(`${name}/package.json`) as { version: string }).version, 10)
    } catch {
      major = undefined
    }
    installed.set(name, major)
  }
  return installed.get(name)
}

function isWrittenFor (name: Package, major = installedMajor(name)): boolean {
  return major === undefined || major === WRITTEN_FOR[name]
}

function unsupported (what: string, name: Package, found: number | undefined): Error {
  return new InvalidOptionError(`fastify-channels ${what} relies on ${name} ${WRITTEN_FOR[name]}.x; found ${name} ${String(found)}.x`)
}

function fastifyMajor (fastify: FastifyInstance): number | undefined {
  const major = Number.parseInt(fastify.version, 10)
  return Number.isNaN(major) ? undefined : major
}

// ---------------------------------------------------------------------------------------------
// Fastify

/**
 * Adds an onRoute hook that runs before every onRoute hook already there.
 *
 * Why: `@fastify/websocket` replaces a websocket route's handler in its own onRoute hook. When the
 * app registered it before fastify-channels, ours must still run first to see which consumer a
 * route mounts. Fastify has no API to order hooks, so the hook is moved to the front of Fastify 5's
 * private hook list (`Symbol('fastify.hooks')`). When ours need not be first (`mustRunFirst`
 * false: fastify-channels registers @fastify/websocket itself, after this hook) and the list is
 * not the one this was written for, the hook is simply added.
 */
export function addOnRouteHookFirst (fastify: FastifyInstance, hook: (route: RouteOptions) => void, mustRunFirst: boolean): void {
  fastify.addHook('onRoute', hook)
  const major = fastifyMajor(fastify)
  const kHooks = Object.getOwnPropertySymbols(fastify).find(s => s.description === 'fastify.hooks')
  const hooks = kHooks === undefined ? undefined : (fastify as unknown as Record<symbol, { onRoute?: unknown[] }>)[kHooks]
  const list = hooks?.onRoute
  if (!isWrittenFor('fastify', major) || !Array.isArray(list) || !list.includes(hook)) {
    if (!mustRunFirst) return
    throw new InvalidOptionError(`cannot order hooks with this Fastify version (${fastify.version}): register fastify-channels before @fastify/websocket`)
  }
  list.splice(list.indexOf(hook), 1)
  list.unshift(hook)
}

/**
 * Ends an upgrade that arrives while the app is closing, with a 503 if nobody answered it.
 *
 * Why: during `close()` Fastify 5 answers a request with a bare 503 and skips every hook,
 * including `@fastify/websocket`'s onResponse hook that destroys an upgrade's socket; an app's own
 * `@fastify/websocket` stops listening for upgrades at all (its default preClose), so nobody
 * answers. Either way `close()` would wait for a client that keeps its socket open. Without
 * Fastify 5 this is skipped: the request then runs through the hooks, where the consumer route
 * answers 503 itself. `arrived` hears of every upgrade (this is the server's one listener of ours).
 */
export function endUpgradesWhileClosing (fastify: FastifyInstance, isClosing: () => boolean, refused: (url: string) => void, arrived: (request: IncomingMessage, socket: Socket) => void): void {
  const needed = isWrittenFor('fastify', fastifyMajor(fastify))
  const server = fastify.server
  // A socket of `injectWS()` is no net.Socket: it has neither `destroySoon` nor anyone to wait for.
  server.on('upgrade', (request: IncomingMessage, socket: Pick<Socket, 'write'> & { bytesWritten?: number, destroySoon?: () => void }) => {
    if (socket instanceof Socket) arrived(request, socket)
    if (!needed || !isClosing()) return
    if ((socket.bytesWritten ?? 0) === 0 && server.listenerCount('upgrade') === 1) {
      socket.write('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
    }
    if ((socket.bytesWritten ?? 0) === 0) return
    // No hook saw this answer: whoever counts handshakes is told here.
    refused(request.url ?? '')
    socket.destroySoon?.()
  })
}

// ---------------------------------------------------------------------------------------------
// ws

/**
 * Lets `decided(request)` choose the subprotocol of each upgrade: a string (when the client offered
 * it), false for none, or undefined for a request that is not a consumer's (the server's own
 * choice then applies, else the client's first).
 *
 * Why: ws chooses the subprotocol in its `handleProtocols` option, while here the consumer's
 * `connect()` chooses it before the upgrade. `@fastify/websocket` builds the server before us (and
 * may be the app's own), so the option is replaced on the live server; ws 8 reads
 * `options.handleProtocols` at every upgrade. Another ws fails `register`: subprotocols would be wrong.
 */
export function decideSubprotocols (wss: WebSocketServer, decided: (request: object) => string | false | undefined): void {
  const major = installedMajor('ws')
  const options = wss.options as { handleProtocols?: unknown } | undefined
  if (!isWrittenFor('ws', major) || options === undefined || !('handleProtocols' in options)) {
    throw unsupported('subprotocol selection', 'ws', major)
  }
  const previous = options.handleProtocols
  options.handleProtocols = (protocols: Set<string>, request: object): string | false => {
    const chosen = decided(request)
    if (chosen !== undefined) return chosen !== false && protocols.has(chosen) ? chosen : false
    if (typeof previous === 'function') return (previous as (p: Set<string>, r: object) => string | false)(protocols, request)
    return protocols.values().next().value ?? false
  }
}

/**
 * Sets the largest message the app's own `@fastify/websocket` server accepts on new sockets.
 *
 * Why: the app built that server with its own options before fastify-channels was registered, and
 * ws offers no setter; ws 8 reads `options.maxPayload` for every socket it upgrades. Another ws
 * fails `register`: a limit that silently does not apply would be worse.
 */
export function setMaxPayload (wss: WebSocketServer, maxPayload: number): void {
  const major = installedMajor('ws')
  const options = wss.options as { maxPayload?: unknown } | undefined
  if (!isWrittenFor('ws', major) || options === undefined || typeof options.maxPayload !== 'number') {
    throw unsupported('option "maxPayload" with an app\'s own @fastify/websocket', 'ws', major)
  }
  // One server, one limit: a second registration's other value would silently replace the first's.
  const before = maxPayloadSet.get(wss)
  if (before !== undefined && before !== maxPayload) {
    throw new InvalidOptionError(`option "maxPayload" (${maxPayload}): another fastify-channels registration on the same @fastify/websocket server set ${before}, and one server has one limit; give both the same value`)
  }
  maxPayloadSet.set(wss, maxPayload)
  options.maxPayload = maxPayload
}

/** The maxPayload a registration set on an app's own `@fastify/websocket` server. */
const maxPayloadSet = new WeakMap<WebSocketServer, number>()

/**
 * Makes `close()` without a code send 1001 on every socket of an app's own `@fastify/websocket`,
 * and end a consumer's socket as the plugin's shutdown does (`shutdownConsumer` returns true when
 * `socket` is a consumer's: its handler in hand finishes first, then 1001).
 *
 * Why: that plugin's own preClose closes every client without a code (1005) before fastify-channels
 * can close its consumers with 1001, and offers no option to change it. Patching each socket's
 * `close` (ws 8's `close(code, reason)`) makes a close without code or reason 1001; a close with a
 * code (ws' own protocol closes, 1009 for one, the consumer's, or the app's), and ws' answer to a
 * peer's close frame (`_closeFrameReceived`, a ws detail), are left as they are. With
 * another ws, clients see that plugin's close as it is.
 */
export function closeClientsAsGoingAway (wss: WebSocketServer, shutdownConsumer: (socket: WebSocket) => boolean): void {
  if (!isWrittenFor('ws')) return
  wss.on('connection', (socket: WebSocket) => {
    const close = socket.close.bind(socket)
    socket.close = (code?: number, reason?: string | Buffer) => {
      // ws' own answer to a close frame without a code is a close without one too: left as it is.
      if (code !== undefined || reason !== undefined || (socket as { _closeFrameReceived?: boolean })._closeFrameReceived === true) close(code, reason)
      else if (!shutdownConsumer(socket)) close(1001, 'server shutting down')
    }
  })
}

/** ws' Sender, the parts used here: its queue state (0 = idle), its frame writer and its TCP socket. */
export interface FrameWriter {
  _state: unknown
  sendFrame: (list: Buffer[], cb?: () => void) => void
  _socket: { cork: () => void, uncork: () => void }
}

const SENDER_WRITTEN_FOR_WS = isWrittenFor('ws')

/**
 * The socket's frame writer when ready-made frames may be written to it; null when every frame
 * must go through `ws.send()`.
 *
 * Why: a group message is, for most consumers, the same text for every local member; framing it
 * once and writing the same bytes to each socket is what a hand-written ws broadcast does, and ws'
 * public API frames per call. ws 8's Sender (`_sender.sendFrame`, the step `ws.send()` ends with)
 * takes a ready frame. Only on a socket without extensions: a compressed socket frames per socket.
 */
export function frameWriterOf (socket: object): FrameWriter | null {
  if (!SENDER_WRITTEN_FOR_WS) return null
  const { _sender: sender, extensions } = socket as { _sender?: Partial<FrameWriter>, extensions?: unknown }
  if (sender === undefined || typeof sender.sendFrame !== 'function' || typeof sender._socket?.cork !== 'function' || extensions !== '') return null
  return sender as FrameWriter
}

/**
 * Runs `write` with the socket's TCP writes held (`cork()`), so that the frames it writes leave
 * in one system call (a `writev`) instead of one each.
 */
export function corked (writer: FrameWriter, write: () => void): void {
  const tcp = writer._socket
  tcp.cork()
  try {
    write()
  } finally {
    tcp.uncork()
  }
}

/**
 * Writes one ready-made frame where `ws.send()` would write exactly that: the socket OPEN (ws knows
 * what to do after a close frame: never write data after one) and nothing queued in the Sender
 * ahead of it. False, with nothing written, otherwise.
 */
export function writeFrame (socket: { readonly readyState: number }, writer: FrameWriter, frame: Buffer[]): boolean {
  if (socket.readyState !== 1 || writer._state !== 0) return false
  writer.sendFrame(frame)
  return true
}

// ---------------------------------------------------------------------------------------------
// Node's http

/** A ServerResponse as its body writes see it: the documented fields and those `write()` reads. */
interface ChunkedResponse {
  readonly write: unknown
  readonly headersSent: boolean
  readonly writableEnded: boolean
  readonly destroyed: boolean
  readonly socket: (Socket & { _httpMessage?: unknown }) | null
  readonly chunkedEncoding?: unknown
  readonly strictContentLength?: unknown
  readonly _hasBody?: unknown
  readonly outputData?: unknown
}

/**
 * The TCP socket a chunked response's body chunk may be written to as one ready-made buffer
 * (size line, data, CRLF); null when it must go through `res.write()`.
 *
 * Why: Node's `res.write()` frames each chunk of a chunked body itself, as four writes to the
 * socket (the size in hex, CRLF, the data, CRLF) gathered by a cork per tick. An event of a
 * group is the same chunk for every member's response: built once, it is written as one buffer,
 * as a WebSocket frame is (outbound.ts). Only where `res.write()` would write to the socket at
 * once — the head sent, the body chunked with no length to check and allowed (not a HEAD or a
 * 204), the response not ended, its socket its own (`_httpMessage`: not a pipelined response
 * still waiting for its turn) and writable, nothing of it buffered in the response: the fields
 * Node's OutgoingMessage itself checks (Node 20's, and older ones alike). And only while
 * `res.write` is Node's own: a middleware that wraps it (compression, byte counting) must see
 * every chunk. Guarded by shape, not by version: where a field is missing or not what it was
 * written for (an HTTP/2 response, a Node that changed them), null, and `res.write()` does the
 * framing.
 */
export function chunkedBodySocket (res: object): Socket | null {
  const response = res as ChunkedResponse
  if (response.write !== OutgoingMessage.prototype.write) return null
  const socket = response.socket
  if (socket === null || socket === undefined || socket._httpMessage !== res || !socket.writable) return null
  if (response.chunkedEncoding !== true || response.strictContentLength === true || response._hasBody !== true) return null
  if (!response.headersSent || response.writableEnded || response.destroyed) return null
  const pending = response.outputData
  if (!Array.isArray(pending) || pending.length !== 0) return null
  // Node 24 holds the chunks res.write() took in this tick in the response, to send them as one
  // chunk on the next: they count in its writableLength, and a chunk written past them would go first.
  return (res as { writableLength?: unknown }).writableLength === socket.writableLength ? socket : null
}

// ---------------------------------------------------------------------------------------------
// @fastify/websocket's upgrade state

/**
 * Lets go of what @fastify/websocket keeps for an upgraded connection once fastify-channels
 * handles it: the upgrade's head on the raw request (symbol 'ws-head'); the ServerResponse it
 * made for the upgrade, still the TCP socket's current response (`socket._httpMessage`, let go
 * with `detachSocket()`); and the WebSocket's 'error' listener, a closure over the request and
 * its reply that calls the errorHandler fastify-channels gave it (the connection reports protocol
 * errors itself). And, from Node, the raw request's `rawHeaders`: `headers` holds the same values
 * (built before this runs), and the names as the client spelled them are per-connection strings;
 * and its `rawTrailers`, an empty array of its own (an upgrade request has no body, so no trailers).
 *
 * Why: the scope keeps the request, and the socket the response, for the life of the connection,
 * and with them the reply, its ServerResponse and the head's buffer: about 1 KiB per connection
 * that nothing uses after the upgrade (and 0.3 KiB more for `rawHeaders`). Only when fastify-channels registered @fastify/websocket
 * (an app's own keeps its errorHandler), and only the one listener it adds (@fastify/websocket
 * 11). The request's properties are cleared, not deleted: a deleted one would turn it into a
 * slow dictionary object, larger than what it let go.
 */
const NO_RAW_HEADERS: string[] = Object.freeze([]) as unknown as string[]

export function releaseUpgradeState (raw: { socket?: object | null, headers: object, rawHeaders: string[], rawTrailers?: string[] }, socket: WebSocket): void {
  if (!isWrittenFor('@fastify/websocket')) return
  void raw.headers // Node builds `headers` from `rawHeaders` on its first read
  raw.rawHeaders = NO_RAW_HEADERS
  // `app.injectWS()`'s stand-in request has none at all.
  if (raw.rawTrailers?.length === 0) raw.rawTrailers = NO_RAW_HEADERS
  for (const key of Object.getOwnPropertySymbols(raw)) {
    if (key.description === 'ws-head') (raw as Record<symbol, unknown>)[key] = undefined
  }
  const tcp = raw.socket as { _httpMessage?: { detachSocket?: (socket: object) => void } | null } | null | undefined
  const response = tcp?._httpMessage
  if (tcp != null && typeof response?.detachSocket === 'function') response.detachSocket(tcp)
  const listeners = socket.listeners('error')
  if (listeners.length === 1) socket.removeListener('error', listeners[0] as (...args: unknown[]) => void)
}

// ---------------------------------------------------------------------------------------------
// @fastify/websocket's injectWS (for fastify-channels/testing)

/**
 * The HTTP status of a handshake that `app.injectWS()` saw refused; undefined for any other error.
 *
 * Why: `injectWS` (in @fastify/websocket 11) rejects a refused handshake with an Error whose only
 * trace of the status is its message, `Unexpected server response: NNN`. With another version
 * the error is passed on as it is.
 */
export function refusedHandshakeStatus (err: unknown): number | undefined {
  if (!isWrittenFor('@fastify/websocket') || !(err instanceof Error)) return undefined
  const match = /Unexpected server response: (\d+)/.exec(err.message)
  return match === null ? undefined : Number(match[1])
}

/**
 * Makes the `Sec-WebSocket-Version` of a request built by `app.injectWS()` a string, as every
 * request read from a socket has it.
 *
 * Why: `injectWS` (in @fastify/websocket 11) sets it to the number 13, and ws from 8.23.1 compares
 * it with the string '13' and answers 400: every injected handshake, and so every
 * WebsocketCommunicator, would be refused. Only a number is changed; with another version of
 * @fastify/websocket nothing is.
 */
export function stringifyInjectedVersion (headers: Record<string, unknown>): void {
  const version = headers['sec-websocket-version']
  if (typeof version === 'number' && isWrittenFor('@fastify/websocket')) headers['sec-websocket-version'] = String(version)
}

const kInjection = Symbol('fastify-channels.injection')

/**
 * The `upgradeContext` for `app.injectWS()` that marks the request the server will see with
 * `marker`; `injectionMarker(request)` reads it back in ws' 'headers' and 'connection' events.
 *
 * Why: several communicators may connect at once, and nothing else tells which server-side
 * request an `injectWS` call made. `injectWS` (in @fastify/websocket 11) builds its fake request
 * by spreading `upgradeContext`, symbols included.
 */
export function markedUpgradeContext (headers: Record<string, string>, marker: object): { headers: Record<string, string> } {
  return { headers, [kInjection]: marker } as { headers: Record<string, string> }
}

export function injectionMarker (request: object): unknown {
  return (request as Record<symbol, unknown>)[kInjection]
}

// ---------------------------------------------------------------------------------------------
// Node's AsyncLocalStorage

/**
 * The symbols under which AsyncLocalStorage instances keep a value on `resource` (an async
 * resource), or undefined where this Node keeps values elsewhere.
 *
 * Why: a connection's tasks switch to its request's async context only where some storage holds
 * a value, since the switch costs a delivery about 5% (async-context.ts), and Node offers no way to
 * ask. Node 20 to 23 keep a storage's value on the current async resource under a symbol the
 * storage makes, described 'kResourceStore'; a resource made in a context copies them. Running a
 * storage to find out would install V8's promise hooks, which disable its fast path for every
 * `async` function of the process for good. From Node 24, and with `--experimental-async-context-frame`
 * before it, values live in a frame V8 carries instead: undefined, and every task switches.
 */
export function storageSymbolsOf (resource: object): symbol[] | undefined {
  if (keepsContextInFrames) return undefined
  const found: symbol[] = []
  for (const symbol of Object.getOwnPropertySymbols(resource)) {
    if (symbol.description === 'kResourceStore' && (resource as Record<symbol, unknown>)[symbol] !== undefined) found.push(symbol)
  }
  return found
}

// NODE_OPTIONS may quote its options (tap rewrites it so: `"--experimental-async-context-frame" "--import=…"`).
const keepsContextInFrames = Number(process.versions.node.split('.')[0]) >= 24 ||
  [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/).map(option => option.replace(/^"(.*)"$/, '$1'))].includes('--experimental-async-context-frame')
