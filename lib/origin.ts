/**
 * Who may open a socket: Channels' `OriginValidator` (browsers send `Origin`, and a page on another
 * site would otherwise reach a consumer with the user's cookies), plus the handshake checks `ws`
 * makes only after the route ran, done first so a bad upgrade never reaches a consumer's `connect()`.
 * Both run in an `onRequest` hook, before the route's own hooks, and refuse with an HTTP status.
 */
import type { FastifyReply, FastifyRequest, onRequestAsyncHookHandler } from 'fastify'
import { InvalidOptionError } from './errors.js'
import { stringifyInjectedVersion } from './internals.js'

export interface OriginOptions {
  /** Channels' OriginValidator patterns; unset means the Origin must be the request's own host. */
  allowedOrigins?: readonly string[]
  /** Refuse requests without an Origin header (non-browser clients); default false. */
  rejectMissingOrigin?: boolean
}

/** An Origin broken into what patterns compare; `port` is the explicit or the scheme's default port. */
export interface ParsedOrigin {
  scheme: string
  hostname: string
  port: number | null
}

type Matcher = (origin: ParsedOrigin | null) => boolean

const DEFAULT_PORTS: Record<string, number> = { http: 80, ws: 80, https: 443, wss: 443 }
const SCHEME = /^([a-z][a-z\d+.-]*):\/\//i
const PATTERN_HINT = "use '*', 'example.com', '.example.com' or 'https://example.com:8443'"

/** Parses an `Origin` header value; null for `null` and for anything that is not `scheme://host[:port]`. */
export function parseOrigin (value: string): ParsedOrigin | null {
  if (!SCHEME.test(value)) return null
  let url: URL
  try {
    url = new URL(value)
  } catch {
    return null
  }
  if (url.hostname === '' || url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '' ||
    (url.pathname !== '' && url.pathname !== '/')) return null
  const scheme = url.protocol.slice(0, -1)
  return { scheme, hostname: url.hostname, port: url.port === '' ? DEFAULT_PORTS[scheme] ?? null : Number(url.port) }
}

/** Django's `is_same_domain`: a leading dot matches the domain and every subdomain. */
function isSameDomain (hostname: string, pattern: string): boolean {
  if (pattern.startsWith('.')) return hostname === pattern.slice(1) || hostname.endsWith(pattern)
  return hostname === pattern
}

// Normalises a bare host the way URL does for Origins (case, IDN to punycode, IPv6 brackets).
function normaliseHostname (host: string): string | null {
  const dot = host.startsWith('.') ? '.' : ''
  try {
    const url = new URL(`http://${host.slice(dot.length)}`)
    if (url.host !== url.hostname || url.pathname !== '/' || url.username !== '' || url.search !== '' || url.hash !== '') return null
    return dot + url.hostname
  } catch {
    return null
  }
}

/**
 * A host with an empty label ('example..com', '..example.com') or a trailing dot ('example.com.')
 * matches no Origin a browser sends for the site meant: refused rather than never matching.
 */
function checkLabels (pattern: string, hostname: string, bad: (why: string) => Error): void {
  if (hostname.startsWith('[')) return
  if (hostname.endsWith('.')) throw bad(`ends with a dot, which only an Origin with the same trailing dot matches; write '${pattern.replace(/\.+(?=(:\d*)?\/?$)/, '')}'`)
  if (hostname.replace(/^\./, '').split('.').includes('')) throw bad('has an empty label (two dots in a row)')
}

function compilePattern (pattern: unknown): Matcher {
  if (typeof pattern !== 'string' || pattern.trim() === '') {
    throw new InvalidOptionError(`option "allowedOrigins" must hold non-empty strings, got ${JSON.stringify(pattern) ?? typeof pattern}`)
  }
  if (pattern === '*') return () => true
  const bad = (why: string): Error =>
    new InvalidOptionError(`option "allowedOrigins": ${JSON.stringify(pattern)} ${why}; ${PATTERN_HINT}`)
  if (pattern.includes('*')) throw bad("is not a pattern: '*' only stands alone (for subdomains write '.example.com')")
  if (pattern.toLowerCase() === 'null') throw bad("would match a host named 'null', never the Origin 'null' that sandboxed frames and file: pages send (only '*' lets that through)")
  const scheme = SCHEME.exec(pattern)?.[1]?.toLowerCase()
  if (scheme === undefined) {
    const hostname = pattern.replace(/\[[^\]]*\]/, '').includes(':') ? null : normaliseHostname(pattern.toLowerCase())
    if (hostname === null || hostname === '.') throw bad('is not a domain (a port needs a scheme, as in \'http://example.com:8080\')')
    checkLabels(pattern, hostname, bad)
    return (origin) => origin !== null && isSameDomain(origin.hostname, hostname)
  }
  const rest = pattern.slice(scheme.length + 3).replace(/\/$/, '')
  const colon = rest.lastIndexOf(':')
  const hasPort = colon !== -1 && !rest.slice(colon).includes(']')
  const hostPart = hasPort ? rest.slice(0, colon) : rest
  const portPart = hasPort ? rest.slice(colon + 1) : ''
  const hostname = normaliseHostname(hostPart.toLowerCase())
  if (hostname === null || hostname === '' || hostname === '.') throw bad('is not scheme://host[:port]')
  checkLabels(pattern, hostname, bad)
  if (hasPort && !/^\d{1,5}$/.test(portPart)) throw bad('has a bad port')
  const port = hasPort ? Number(portPart) : DEFAULT_PORTS[scheme] ?? null
  if (port !== null && port > 65535) throw bad('has a bad port')
  return (origin) => origin !== null && origin.scheme === scheme && origin.port === port &&
    isSameDomain(origin.hostname, hostname)
}

/** Builds the matcher for `allowedOrigins`; a bad pattern throws InvalidOptionError (at register). */
export function compileAllowedOrigins (patterns: unknown): Matcher {
  if (!Array.isArray(patterns)) throw new InvalidOptionError('option "allowedOrigins" must be an array of origin patterns')
  const matchers = patterns.map(compilePattern)
  return origin => matchers.some(match => match(origin))
}

/** The default: the Origin's host and port must be the request's `Host` (default ports filled in). */
export function isSameHost (origin: ParsedOrigin | null, host: string): boolean {
  if (origin === null) return false
  const match = /^(\[[^\]]*\]|[^:[\]]*)(?::(\d{1,5}))?$/.exec(host)
  if (match === null) return false
  const hostname = normaliseHostname(match[1].toLowerCase())
  if (hostname === null || hostname === '' || hostname.startsWith('.')) return false
  const port = match[2] !== undefined ? Number(match[2]) : DEFAULT_PORTS[origin.scheme] ?? null
  return hostname === origin.hostname && port === origin.port
}

const TOKEN = /^[!#$%&'*+\-.^_`|~\dA-Za-z]+$/
const WS_KEY = /^[+/\dA-Za-z]{22}==$/

/** What `ws` would refuse with 400 after the route; checked before any hook or consumer runs. */
function invalidUpgrade (request: FastifyRequest): string | undefined {
  const headers = request.headers
  if (String(headers.upgrade).toLowerCase() !== 'websocket') return 'Invalid Upgrade header'
  const key = headers['sec-websocket-key']
  if (typeof key !== 'string' || !WS_KEY.test(key.trim())) return 'Missing or invalid Sec-WebSocket-Key header'
  const version = String(headers['sec-websocket-version']).trim()
  if (version !== '13' && version !== '8') return 'Missing or invalid Sec-WebSocket-Version header'
  const protocols = headers['sec-websocket-protocol']
  if (protocols !== undefined) {
    const list = String(protocols).split(',').map(p => p.trim())
    if (list.some(p => !TOKEN.test(p)) || new Set(list).size !== list.length) return 'Invalid Sec-WebSocket-Protocol header'
  }
  return undefined
}

/** Checks options once, at register. */
export function checkOriginOptions (opts: OriginOptions): void {
  if (opts.allowedOrigins !== undefined) compileAllowedOrigins(opts.allowedOrigins)
  if (opts.rejectMissingOrigin !== undefined && typeof opts.rejectMissingOrigin !== 'boolean') {
    throw new InvalidOptionError('option "rejectMissingOrigin" must be a boolean')
  }
}

/**
 * The `onRequest` hook run for upgrades to consumer routes: a malformed handshake gets 400, a
 * refused Origin 403 (logged at info with the Origin, which Channels does not do). On any
 * upgrade route it first gives an injected handshake its version as a string (internals.ts).
 */
export function createUpgradeGuard (opts: OriginOptions, isConsumerRoute: (request: FastifyRequest) => boolean): onRequestAsyncHookHandler {
  const allowed = opts.allowedOrigins === undefined ? undefined : compileAllowedOrigins(opts.allowedOrigins)
  const rejectMissing = opts.rejectMissingOrigin === true
  return async function channelsUpgradeGuard (request: FastifyRequest, reply: FastifyReply) {
    if (request.ws !== true) return
    // On every route, so that app.injectWS() reaches the app's own sockets too.
    stringifyInjectedVersion(request.raw.headers)
    if (!isConsumerRoute(request)) return
    const invalid = invalidUpgrade(request)
    if (invalid !== undefined) {
      request.log.info({ url: request.url, reason: invalid }, 'websocket handshake refused: bad upgrade request')
      return reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: invalid })
    }
    const header = request.headers.origin
    let refusal: string | undefined
    if (header === undefined) {
      if (rejectMissing) refusal = 'Origin header required'
    } else {
      const origin = parseOrigin(header)
      const ok = allowed === undefined ? isSameHost(origin, request.host) : allowed(origin)
      if (!ok) refusal = 'Origin not allowed'
    }
    if (refusal !== undefined) {
      request.log.info({ origin: header ?? null, host: request.host, url: request.url }, `websocket handshake refused: ${refusal}`)
      return reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: refusal })
    }
  }
}
