/**
 * The fastify-channels example: chat rooms with presence and history, a live clock and deploys run by
 * a background worker, all over one GroupsConsumer socket per page, spoken by fastify-channels/client.
 *
 *   npm start                                       in-memory layer, http://127.0.0.1:3000
 *   PORT=3001 REDIS_URL=redis://127.0.0.1:6379 npm start   Redis layer: run several, chat across them
 *
 * Environment: PORT (3000), HOST (127.0.0.1), REDIS_URL (unset: in-memory layer), REDIS_PREFIX
 * (channels: the layer's keys, and the sessions under <prefix>:session:), SESSION_SECRET,
 * SESSION_FILE (where the in-memory mode keeps sessions across restarts), SERVER_LABEL (what
 * names this process in the page and its clock group; :PORT), TRUST_PROXY, LOG_LEVEL (info).
 */
import { dirname, join } from 'node:path'
import { tmpdir } from 'node:os'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import fastifyCookie from '@fastify/cookie'
import fastifySession from '@fastify/session'
import fastifyStatic from '@fastify/static'
import { Registry, collectDefaultMetrics } from 'prom-client'
import fastifyChannels, { InMemoryChannelLayer, RedisChannelLayer } from 'fastify-channels'
import { AppConsumer, DeployWorker, DEPLOY_CHANNEL, clockGroup, groupPolicies, serverLabel, sessionGroup, startClock } from './consumers.js'
import { FileSessionStore, RedisSessionStore } from './sessions.js'
import { DeployLogConsumer, requireUser } from './deploy-log.js'

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'
const redisUrl = process.env.REDIS_URL
const redisPrefix = process.env.REDIS_PREFIX ?? 'channels'
// A fixed development secret keeps sessions valid across restarts; set SESSION_SECRET anywhere real.
const sessionSecret = process.env.SESSION_SECRET ?? 'fastify-channels-example-dev-secret-change-me'

const app = Fastify({
  logger: { level: process.env.LOG_LEVEL ?? 'info' },
  // Behind example-app/nginx.conf the client's address is in X-Forwarded-For: trust the proxy's
  // address (TRUST_PROXY, Fastify's trustProxy; '' trusts none).
  trustProxy: process.env.TRUST_PROXY === '' ? false : (process.env.TRUST_PROXY ?? '127.0.0.1'),
  // Django's routes end with '/' ('ws/chat/<room>/'): serve /ws/chat/lobby and /ws/chat/lobby/ alike.
  routerOptions: { ignoreTrailingSlash: true }
})

let layer
let sessionStore
if (redisUrl) {
  layer = new RedisChannelLayer({ url: redisUrl, prefix: redisPrefix, groups: groupPolicies })
  sessionStore = new RedisSessionStore(redisUrl, `${redisPrefix}:session:`, app.log)
  app.addHook('onClose', async () => { await sessionStore.close() })
} else {
  layer = new InMemoryChannelLayer({ groups: groupPolicies })
  sessionStore = new FileSessionStore(process.env.SESSION_FILE ?? join(tmpdir(), 'fastify-channels-example', 'sessions.json'))
}

await app.register(fastifyCookie)
await app.register(fastifySession, {
  secret: sessionSecret,
  store: sessionStore,
  saveUninitialized: false,
  cookie: { secure: false, httpOnly: true, sameSite: 'lax', maxAge: 7 * 24 * 3600 * 1000 }
})
// Prometheus metrics at /metrics: the process' own and fastify-channels'.
const metrics = new Registry()
collectDefaultMetrics({ register: metrics })
await app.register(fastifyChannels, { layer, metrics: { registry: metrics }, rateLimit: { messages: 50, interval: 1000 } })
app.get('/metrics', async (request, reply) => reply.type(metrics.contentType).send(await metrics.metrics()))
await app.register(fastifyStatic, { root: fileURLToPath(new URL('./public/', import.meta.url)) })
// The page imports fastify-channels/client as the package builds it (dist/client/, plain ES modules).
await app.register(fastifyStatic, {
  root: dirname(fileURLToPath(import.meta.resolve('fastify-channels/client'))),
  prefix: '/client/',
  decorateReply: false
})

// The sign-in form posts urlencoded data; this is all the parsing it needs.
app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 4096 },
  (request, body, done) => done(null, Object.fromEntries(new URLSearchParams(body))))

app.get('/ws/app', { websocket: true }, AppConsumer.asHandler())
app.channelWorker(DEPLOY_CHANNEL, DeployWorker)
// The deploy log as server-sent events (read-only, recovers with Last-Event-ID): /deploy-log.html
app.get('/events/deploys', { preHandler: requireUser }, DeployLogConsumer.asHandler())

app.get('/api/me', async (request) => ({ user: request.session.get('user') ?? null, server: serverLabel, clock: clockGroup }))

app.post('/login', async (request, reply) => {
  // Printable characters only, so a name cannot break a log line or the page's layout.
  // 24 characters, counted as a reader does (never half of one outside the Basic Multilingual Plane).
  const name = [...String(request.body?.name ?? '').replace(/[^\p{L}\p{N}\p{P}\p{Zs}]/gu, '').trim()].slice(0, 24).join('')
  if (name === '') return reply.redirect('/?error=name', 303)
  // Signing in again ends the session before it: its sockets (other tabs) close, as on sign-out,
  // rather than go on as its user.
  if (request.session.get('user') != null) {
    await app.channelLayer.groupSend(sessionGroup(request.session.sessionId), { type: 'session.ended' })
  }
  // A fresh session id on sign-in: an id planted before it (session fixation) is worth nothing after.
  await request.session.regenerate()
  // Names are what people call themselves, not who they are: two people may both be Ada.
  request.session.set('user', { id: randomBytes(9).toString('base64url'), name })
  return reply.redirect('/', 303)
})

app.post('/logout', async (request, reply) => {
  // Every socket of this session, in any tab and process, closes (AppConsumer.sessionEnded).
  await app.channelLayer.groupSend(sessionGroup(request.session.sessionId), { type: 'session.ended' })
  await request.session.destroy()
  return reply.redirect('/', 303)
})

let stopClock = () => {}
app.addHook('onReady', async () => { stopClock = startClock(app.channelLayer, app.log) })
app.addHook('preClose', async () => { stopClock() })

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    app.log.info({ signal }, 'shutting down')
    app.close().then(() => process.exit(0), (err) => {
      app.log.error({ err }, 'shutdown failed')
      process.exit(1)
    })
  })
}

const address = await app.listen({ port, host })
app.log.info(`fastify-channels example on ${address} (${redisUrl ? `Redis layer at ${redisUrl}` : 'in-memory layer'})`)
