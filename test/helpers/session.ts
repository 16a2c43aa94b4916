/**
 * An app with `@fastify/cookie` and `@fastify/session` registered before fastify-channels, as a
 * user would, and helpers to carry the session cookie from HTTP responses into a socket.
 */
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import fastifyCookie from '@fastify/cookie'
import fastifySession, { type FastifySessionOptions } from '@fastify/session'
import fastifyChannels, { type FastifyChannelsOptions } from '../../lib/index.js'

export const SECRET = 'a secret with at least 32 characters....'

export interface SessionApp {
  app: FastifyInstance
  logs: Array<Record<string, unknown>>
}

export async function buildSessionApp (
  opts: FastifyChannelsOptions,
  routes: (app: FastifyInstance) => void,
  session: Partial<FastifySessionOptions> = {}
): Promise<SessionApp> {
  const logs: Array<Record<string, unknown>> = []
  const stream = { write (line: string) { logs.push(JSON.parse(line) as Record<string, unknown>) } }
  const app = Fastify({ logger: { level: 'debug', stream } })
  await app.register(fastifyCookie)
  await app.register(fastifySession, { secret: SECRET, cookie: { secure: false }, ...session })
  await app.register(fastifyChannels, opts)
  routes(app)
  await app.ready()
  return { app, logs }
}

/** The session without declaring every test key in `fastify`'s `Session` interface. */
export function sessionData (request: FastifyRequest): { get (key: string): unknown, set (key: string, value: unknown): void, sessionId: string } {
  return request.session as unknown as { get (key: string): unknown, set (key: string, value: unknown): void, sessionId: string }
}

/** `name=value` of the session cookie an HTTP response set. */
export function sessionCookie (response: { cookies: Array<{ name: string, value: string }> }): string {
  const cookie = response.cookies.find(c => c.name === 'sessionId')
  if (cookie === undefined) throw new Error('the response set no session cookie')
  return `sessionId=${cookie.value}`
}
