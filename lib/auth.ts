/**
 * `login()` and `logout()` from inside a consumer: Channels' `channels.auth`, minus its trap.
 *
 * Channels' `login()` cycles the session key, which needs a new cookie, and no cookie can be set
 * over an open socket: the browser keeps sending the old key and the login is lost. Here the
 * session keeps the id the browser already holds, and the session is saved before the promise
 * resolves, so the next HTTP request with that cookie sees the change.
 */
import type { ChannelsUser, HttpScope, Scope, SessionLike } from './scope.js'
import { InvalidOptionError, SessionRequiredError } from './errors.js'

/** The session key the user is kept under; the default `getUser` reads it back. */
export const SESSION_USER_KEY = 'user'

type LooseSession = SessionLike & Record<string, unknown>

/** A WebSocket or an HTTP consumer's scope: both carry the request, its session and its user. */
type AnyScope = Scope | HttpScope

function sessionFor (scope: AnyScope, action: string): LooseSession {
  const session = scope.session
  if (session === null) throw new SessionRequiredError(action)
  return session as unknown as LooseSession
}

// The browser holds this session only if one of its cookies carries the signed id (after any prefix);
// a session created during the upgrade never reaches the browser, since no response sets its cookie.
function clientHoldsSession (scope: AnyScope, session: SessionLike): boolean {
  const cookies = (scope.request as unknown as { cookies?: Record<string, string | undefined> | null }).cookies ?? {}
  const id = session.encryptedSessionId
  return typeof id === 'string' && id !== '' && Object.values(cookies).some(value => value?.endsWith(id) === true)
}

async function store (scope: AnyScope, session: LooseSession, action: string, change: () => void): Promise<void> {
  const had = Object.hasOwn(session, SESSION_USER_KEY)
  const previous = session[SESSION_USER_KEY]
  change()
  try {
    await session.save()
  } catch (err) {
    // Leave memory as the store has it: the caller sees the rejection and nothing changed.
    if (had) session[SESSION_USER_KEY] = previous
    else Reflect.deleteProperty(session, SESSION_USER_KEY)
    throw err
  }
  if (!clientHoldsSession(scope, session)) {
    scope.request.log.warn({ sessionId: session.sessionId },
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
