/**
 * `login()` and `logout()` from inside a consumer: Channels' `channels.auth`, minus its trap.
 *
 * Channels' `login()` cycles the session key, which needs a new cookie, and no cookie can be set
 * over an open socket: the browser keeps sending the old key and the login is lost. Here the
 * session keeps the id the browser already holds, and the session is saved before the promise
 * resolves, so the next HTTP request with that cookie sees the change.
 */
import type { ChannelsUser, HttpScope, Scope, SessionLike } from './scope.js'
import { InvalidOptionError, SessionGoneError, SessionRequiredError } from './errors.js'

/** The session key the user is kept under; the default `getUser` reads it back. */
export const SESSION_USER_KEY = 'user'

type LooseSession = SessionLike & Record<string, unknown> & { touch?: () => void }

/** A WebSocket or an HTTP consumer's scope: both carry the request, its session and its user. */
type AnyScope = Scope | HttpScope

function sessionFor (scope: AnyScope, action: string): LooseSession {
  const session = scope.session
  if (session === null) {
    throw new SessionRequiredError(action, storeOf(scope) === undefined
      ? 'register @fastify/cookie and @fastify/session before the consumer route'
      : "this connection has none (it destroyed it, or the socket's path is outside the session cookie's path)")
  }
  return session as unknown as LooseSession
}

interface SessionStore {
  get (id: string, callback: (err: unknown, session?: unknown) => void): void
}

// `@fastify/session` decorates every request with its store.
function storeOf (scope: AnyScope): SessionStore | undefined {
  const store = (scope.request as unknown as { sessionStore?: Partial<SessionStore> | null }).sessionStore
  return typeof store?.get === 'function' ? store as SessionStore : undefined
}

/** Whether the store still has the session, and it has not expired. */
function inStore (store: SessionStore, id: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    store.get(id, (err, found) => { if (err !== null && err !== undefined) reject(err); else resolve(found !== null && found !== undefined && !expired(found)) })
  })
}

// As `@fastify/session` reads a stored session: its cookie's expiry has passed. A store may keep
// an expired session until a request loads it (the default in-memory store does), and a save
// would make it live again.
function expired (stored: unknown): boolean {
  const expires = (stored as { cookie?: { expires?: unknown } | null }).cookie?.expires
  if (expires instanceof Date) return expires.getTime() <= Date.now()
  // None, '' and 0 alike, as `@fastify/session` reads them: a cookie for the browser's session.
  if ((typeof expires !== 'string' && typeof expires !== 'number') || expires === '' || expires === 0) return false
  return new Date(expires).getTime() <= Date.now()
}

// The browser holds this session only if one of its cookies carries the signed id (after any
// prefix; signed with any of the secrets, the newest or one being rotated out); a session created
// during the upgrade never reaches the browser, since no response sets its cookie.
function clientHoldsSession (scope: AnyScope, session: SessionLike): boolean {
  const cookies = (scope.request as unknown as { cookies?: Record<string, string | undefined> | null }).cookies ?? {}
  const { sessionId, encryptedSessionId } = session
  if (typeof sessionId !== 'string' || sessionId === '') return false
  const signer = signerOf(session)
  return Object.values(cookies).some(value => typeof value === 'string' &&
    ((typeof encryptedSessionId === 'string' && encryptedSessionId !== '' && value.endsWith(encryptedSessionId)) || value.includes(`${sessionId}.`) ||
      (signer !== undefined && unsignsTo(signer, value, sessionId))))
}

interface Signer { unsign (value: string): { valid?: boolean, value?: unknown } | null | undefined }

// `@fastify/session` keeps its cookie signer on the session, under a symbol of its own: the one
// it made from `secret`, or an app's own (`secret: { sign, unsign }`), whose signed ids need not
// look like `id.signature` nor be the same twice.
function signerOf (session: SessionLike): Signer | undefined {
  const key = Object.getOwnPropertySymbols(session).find(symbol => symbol.description === 'cookieSignerKey')
  const signer = key === undefined ? undefined : (session as unknown as Record<symbol, Partial<Signer> | undefined>)[key]
  return typeof signer?.unsign === 'function' ? signer as Signer : undefined
}

// Whether `value` (after a cookie prefix, if any: up to MAX_PREFIX characters) unsigns to `id`.
const MAX_PREFIX = 32
function unsignsTo (signer: Signer, value: string, id: string): boolean {
  for (let start = 0; start <= Math.min(MAX_PREFIX, value.length - 1); start++) {
    try {
      const unsigned = signer.unsign(value.slice(start))
      if (unsigned?.valid === true && unsigned.value === id) return true
    } catch {}
  }
  return false
}

async function store (scope: AnyScope, session: LooseSession, action: string, change: () => void): Promise<void> {
  const held = clientHoldsSession(scope, session)
  // A session the client holds was read from the store at the handshake. Gone from it since (it
  // expired; an HTTP request logged out or rotated the id), a save would bring it back under an id
  // the browser may have dropped: a logout that signs no one out, a login nobody sees.
  const sessions = storeOf(scope)
  if (held && sessions !== undefined && !(await inStore(sessions, session.sessionId))) throw new SessionGoneError(action)
  const had = Object.hasOwn(session, SESSION_USER_KEY)
  const previous = session[SESSION_USER_KEY]
  change()
  // The expiry was set when the socket opened; saved as it is, a connection older than the
  // cookie's maxAge would store a session already expired, which the next HTTP request discards.
  session.touch?.()
  try {
    await session.save()
  } catch (err) {
    // Leave memory as the store has it: the caller sees the rejection and nothing changed.
    if (had) session[SESSION_USER_KEY] = previous
    else Reflect.deleteProperty(session, SESSION_USER_KEY)
    throw err
  }
  if (!held) {
    // Not the session id: it is what the store keys the signed-in session by.
    scope.request.log.warn(
      `${action}(): the client sent no cookie for this session, so its HTTP requests will not see the change; ` +
      'let an HTTP response set the session cookie before the socket opens')
  }
}

/**
 * Signs `user` in: `scope.user` becomes `user`, and the session stores it under `'user'` and is
 * saved (same session id) before this resolves. The user must be serializable by the session store.
 */
export async function login (scope: AnyScope, user: ChannelsUser): Promise<void> {
  if (user === null || user === undefined) {
    throw new InvalidOptionError('login(scope, user) needs a user; call logout(scope) to sign out')
  }
  const session = sessionFor(scope, 'login')
  await store(scope, session, 'login', () => { session[SESSION_USER_KEY] = user })
  scope.user = user
}

/** Signs out: removes `'user'` from the session, saves it, and sets `scope.user` to null. */
export async function logout (scope: AnyScope): Promise<void> {
  const session = sessionFor(scope, 'logout')
  await store(scope, session, 'logout', () => { Reflect.deleteProperty(session, SESSION_USER_KEY) })
  scope.user = null
}
