// A server process of bench/fuzz.js: a GroupsConsumer at /ws?id=<client> that lets every client
// join any group and records presence `{ id }` for each join, on a RedisChannelLayer, and a
// publisher the harness drives over IPC (`publish` answers with what groupSend resolved with).
//   node bench/fuzz-server.js <port>          (started by bench/fuzz.js, not on its own)
// Environment: REDIS_URL, LAYER_PREFIX, GROUPS (the layer's policies, JSON), LEASE (the layer's
// membershipLease, seconds), LOG_FILE (warnings and errors of the app and the layer, appended).
// SIGTERM closes the app (sockets get 1001) and exits, as a deploy stops a process.
import Fastify from 'fastify'
import fastifyChannels, { GroupsConsumer, RedisChannelLayer } from 'fastify-channels'
import { serveIpc } from './lib/common.js'

const port = Number(process.argv[2] ?? 0)
const { REDIS_URL, LAYER_PREFIX, GROUPS, LEASE, LOG_FILE } = process.env

class FuzzConsumer extends GroupsConsumer {
  canJoin () { return true }
  presenceInfo () { return { id: String(this.scope.query.id) } }
}

// Reported to the harness before the process goes down: the fuzz counts it as a violation.
process.on('unhandledRejection', err => {
  process.send?.({ type: 'unhandled', error: String(err?.stack ?? err) }, () => process.exit(70))
})

const layer = new RedisChannelLayer({
  url: REDIS_URL,
  prefix: LAYER_PREFIX,
  groups: JSON.parse(GROUPS ?? '{}'),
  membershipLease: LEASE === undefined ? undefined : Number(LEASE)
})
const app = Fastify({ logger: LOG_FILE === undefined ? false : { level: 'warn', file: LOG_FILE, base: { pid: process.pid, port } } })
await app.register(fastifyChannels, { layer })
app.get('/ws', { websocket: true }, FuzzConsumer.asHandler())
await app.listen({ port, host: '127.0.0.1' })

serveIpc({
  publish: async ({ group, n }) => ({ position: await layer.groupSend(group, { type: 'room.message', n }) })
})
process.once('SIGTERM', () => {
  app.close().then(() => process.exit(0), () => process.exit(1))
})
process.send({ type: 'ready', pid: process.pid, port: app.server.address().port })
