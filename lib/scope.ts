/**
 * The connection scope: Channels' `scope`, built once per connection after the route's hooks ran,
 * so it sees what authentication hooks put on the request. `@fastify/cookie` and
 * `@fastify/session` are detected, never required.
 */
import type { IncomingHttpHeaders } from 'node:http'
import type { FastifyRequest } from 'fastify'
import { shareHeaderValues } from './shared-header-values.js'
import { InvalidOptionError } from './errors.js'

/**
 * The signed-in user. Empty on purpose: augment it with the shape your app stores, e.g.
 * `declare module 'fastify-channels' { interface ChannelsUser { id: string } }`.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-interface
export interface ChannelsUser {}

/**
 * The part of `@fastify/session`'s session object that this package uses. These declarations never
 * import `@fastify/session` (an optional peer): an app without it must still compile.
 */
export interface SessionLike {
  readonly sessionId: string
  readonly encryptedSessionId: string
  get (key: string): unknown
  set (key: string, value: unknown): void
  save (): Promise<void>
  reload (): Promise<void>
}

/**
 * `scope.session`'s type: `@fastify/session`'s `FastifySessionObject` when the app uses that plugin
 * (its types give `FastifyRequest` a `session`), else `SessionLike`.
 */
export type ScopeSession = FastifyRequest extends { session: infer S extends SessionLike } ? S : SessionLike

export interface Scope {
  /** `'websocket'` for a WebSocket consumer; an HTTP consumer's scope is an `HttpScope`. */
  type: 'websocket'
  /** The decoded path, without the query string. */
  path: string
  /** The path as the client sent it. */
  rawPath: string
  queryString: string
  query: Record<string, string | string[]>
  /** Route params: Channels' `url_route` kwargs. */
  params: Record<string, string>
  headers: IncomingHttpHeaders
  /** Filled by `@fastify/cookie`; `{}` without it. */
  cookies: Record<string, string>
  /**
   * The `@fastify/session` session (always the request's current one, also after `reload()`);
   * null without the plugin. Changes are stored only by `await scope.session.save()`.
   */
  session: ScopeSession | null
  /** From the plugin's `getUser`; null when anonymous. `login()` and `logout()` update it. */
  user: ChannelsUser | null
  client: { address: string; port: number }
  server: { address: string; port: number }
  /** The subprotocols the client offered, in its order (always empty for HTTP). */
  subprotocols: string[]
  request: FastifyRequest
}

/** The scope of an `AsyncHttpConsumer`: the same fields, built the same way, with `type: 'http'`. */
export interface HttpScope extends Omit<Scope, 'type'> {
  type: 'http'
}

export type GetUser = (request: FastifyRequest) => ChannelsUser | null | undefined | Promise<ChannelsUser | null | undefined>

/**
 * The request's `@fastify/session` session, or null: without the plugin, and also when the plugin
 * left a bare `{}` (the request's path is outside the session cookie's `path`).
 */
export function sessionOf (request: FastifyRequest): ScopeSession | null {
  const session = (request as unknown as { session?: unknown }).session
  if (session === null || typeof session !== 'object') return null
  const { get, save } = session as Partial<Record<'get' | 'save', unknown>>
  return typeof get === 'function' && typeof save === 'function' ? session as ScopeSession : null
}

/** The default `getUser`: `request.user` (set by @fastify/jwt, @fastify/passport or any hook), else the session's `'user'`. */
export const defaultGetUser: GetUser = (request) => {
  const user = (request as unknown as { user?: unknown }).user ??
    (sessionOf(request) as SessionLike | null)?.get('user') ?? null
  return user as ChannelsUser | null
}

function decodePath (rawPath: string): string {
  // Without a `%` there is nothing to decode: the same string, not a copy of it.
  if (!rawPath.includes('%')) return rawPath
  try {
    return decodeURIComponent(rawPath)
  } catch {
    return rawPath
  }
}

/**
 * What a scope holds when there is nothing to hold, one frozen object for every scope: no
 * subprotocol offered, no `@fastify/cookie`. Nobody writes to them, and a write would throw
 * rather than be lost.
 */
const NO_SUBPROTOCOLS: string[] = Object.freeze([]) as unknown as string[]
const NO_COOKIES: Record<string, string> = Object.freeze({})

/**
 * `accept(subprotocol)`'s argument: a string the client offered. RFC 6455 §4.2.2 lets the server
 * pick only one of those; any other fails the client's handshake (ws would leave it out, and the
 * client then fails it as "no subprotocol"), so it is the app's bug, reported as one.
 */
export function checkSubprotocol (request: FastifyRequest, subprotocol: unknown): void {
  if (typeof subprotocol !== 'string') throw new InvalidOptionError('accept(subprotocol) takes a string')
  const offered = parseSubprotocols(request.headers['sec-websocket-protocol'])
  if (offered.includes(subprotocol)) return
  throw new InvalidOptionError(`accept("${subprotocol}"): the client did not offer that subprotocol ` +
    `(it offered ${offered.map(p => `"${p}"`).join(', ') || 'none'})`)
}

function parseSubprotocols (header: string | undefined): string[] {
  if (header === undefined) return NO_SUBPROTOCOLS
  return header.split(',').map(p => p.trim()).filter(p => p.length > 0)
}

/** `@fastify/cookie`'s own object when every value is a string (as it parses them), else a copy of those that are. */
function cookiesOf (cookies: Record<string, string | undefined> | null | undefined): Record<string, string> {
  if (cookies == null) return NO_COOKIES
  for (const key in cookies) {
    if (typeof cookies[key] !== 'string') {
      return Object.fromEntries(Object.entries(cookies).filter((e): e is [string, string] => typeof e[1] === 'string'))
    }
  }
  return cookies as Record<string, string>
}

/**
 * The server's side of a connection is one of few addresses (those the process listens on): one
 * frozen object per address and port, shared by the scopes of all its connections.
 */
const servers = new Map<string, Scope['server']>()
const MAX_SERVERS = 64

function serverOf (socket: { localAddress?: string, localPort?: number } | undefined): Scope['server'] {
  const address = socket?.localAddress ?? ''
  const port = socket?.localPort ?? 0
  const key = `${port} ${address}`
  let server = servers.get(key)
  if (server === undefined) {
    server = Object.freeze({ address, port })
    if (servers.size < MAX_SERVERS) servers.set(key, server)
  }
  return server
}

type ScopeFields = Omit<Scope | HttpScope, 'session'>

/**
 * `scope.session`'s accessor, one pair shared by every scope. It is an own enumerable property (so
 * `Object.keys(scope)` and `{ ...scope }` show it), and a getter so that a consumer that calls
 * `scope.session.reload()` (which replaces request.session) keeps seeing the live session. Being
 * the same getter and setter on every scope lets V8 give all scopes one hidden class (a getter made
 * per scope would leave each scope a dictionary of its own).
 */
const sessionProperty = {
  enumerable: true,
  get (this: ScopeFields): ScopeSession | null { return sessionOf(this.request) },
  set (this: ScopeFields, value: ScopeSession | null) { (this.request as unknown as { session: unknown }).session = value }
}

/**
 * The client: behind a proxy Fastify trusts (`trustProxy`), the forwarded address, whose port no
 * standard header carries (0); otherwise the socket's peer.
 */
function clientOf (request: FastifyRequest, socket: { remoteAddress?: string, remotePort?: number } | undefined): Scope['client'] {
  const address = request.ip ?? socket?.remoteAddress ?? ''
  // Fastify's `ips` are the socket's address and the trusted forwarded ones: more than one, and
  // `ip` is forwarded (even when it reads the same as the proxy's own).
  const forwarded = (request.ips?.length ?? 0) > 1
  return { address, port: forwarded ? 0 : socket?.remotePort ?? 0 }
}

/** The scope of a `'websocket'` or an `'http'` consumer's request. */
export async function buildScope (request: FastifyRequest, getUser: GetUser, type: 'websocket' | 'http' = 'websocket'): Promise<Scope | HttpScope> {
  const url = request.url
  const q = url.indexOf('?')
  const rawPath = q === -1 ? url : url.slice(0, q)
  const socket = request.raw.socket as typeof request.raw.socket | undefined
  const cookies = (request as unknown as { cookies?: Record<string, string | undefined> | null }).cookies
  const user = (await getUser(request)) ?? null
  // The scope keeps the headers for the connection's life: values many clients send alike are held once.
  shareHeaderValues(request.headers)
  // Always the same properties in the same order, then `session`: one hidden class for all scopes.
  const scope: ScopeFields = {
    type,
    path: decodePath(rawPath),
    rawPath,
    queryString: q === -1 ? '' : url.slice(q + 1),
    // The request's own objects, as `headers` is: the scope lives as long as the request does.
    query: (request.query ?? {}) as Record<string, string | string[]>,
    params: (request.params ?? {}) as Record<string, string>,
    headers: request.headers,
    cookies: cookiesOf(cookies),
    user,
    client: clientOf(request, socket),
    server: serverOf(socket),
    subprotocols: type === 'websocket' ? parseSubprotocols(request.headers['sec-websocket-protocol']) : NO_SUBPROTOCOLS,
    request
  }
  return Object.defineProperty(scope, 'session', sessionProperty) as Scope | HttpScope
}
