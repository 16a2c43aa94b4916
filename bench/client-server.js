// The server side of the client benches, in its own process: a GroupsConsumer with an `echo`
// action at /ws (fastify-channels as a user writes it) and, on another port, a raw `ws` echo server
// (the floor for a call's round trip). Counts WebSocket handshakes per 100 ms, for the storm.
//   node bench/client-server.js [port] [echoPort]     (0: any free port)
// Environment, for the other client benches:
//   GROUPS='{"room.*":{"history":{…}}}'   the layer's group policies
//   REDIS_URL, LAYER_PREFIX              a RedisChannelLayer instead of the in-memory one (rolling restart)
//   FRAME_LIMIT=messages/interval        the plugin's `rateLimit` option (abuse)
//   HANDSHAKE_LIMIT=n                    @fastify/rate-limit on /ws: n handshakes a minute per address (abuse)
// SIGTERM closes the app (sockets get 1001) and exits, as a deploy stops a process.
import http from 'node:http'
import Fastify from 'fastify'
import { WebSocketServer } from 'ws'
import fastifyChannels, { GroupsConsumer, InMemoryChannelLayer, RedisChannelLayer } from 'fastify-channels'
import { serveIpc } from './lib/common.js'

const [port = 0, echoPort = 0] = process.argv.slice(2).map(Number)
const { GROUPS, REDIS_URL, LAYER_PREFIX, FRAME_LIMIT, HANDSHAKE_LIMIT } = process.env
const started = performance.timeOrigin + performance.now()
const handshakes = new Map() // 100 ms bucket (since the epoch) → count
let refusedHandshakes = 0

class BenchConsumer extends GroupsConsumer {
  static actions = { echo: {} }
  canJoin () { return true }
  async echo (args) { return args }
}

const groups = JSON.parse(GROUPS ?? '{}')
const layer = REDIS_URL === undefined ? new InMemoryChannelLayer({ groups }) : new RedisChannelLayer({ url: REDIS_URL, prefix: LAYER_PREFIX, groups })
const [messages, interval] = (FRAME_LIMIT ?? '').split('/').map(Number)
const app = Fastify({ logger: false })
if (HANDSHAKE_LIMIT !== undefined) await app.register((await import('@fastify/rate-limit')).default, { global: false })
await app.register(fastifyChannels, { layer, heartbeatInterval: 0, rateLimit: FRAME_LIMIT === undefined ? undefined : { messages, interval } })
app.addHook('onRequest', async () => {
  const bucket = Math.floor((performance.timeOrigin + performance.now()) / 100)
  handshakes.set(bucket, (handshakes.get(bucket) ?? 0) + 1)
})
const limit = HANDSHAKE_LIMIT === undefined
  ? undefined
  : { rateLimit: { max: Number(HANDSHAKE_LIMIT), timeWindow: 60_000, onExceeded: () => { refusedHandshakes++ } } }
app.get('/ws', { websocket: true, config: limit }, BenchConsumer.asHandler())
app.get('/healthz', async () => ({ pid: process.pid }))
await app.listen({ port, host: '127.0.0.1' })

const echoServer = http.createServer()
const wss = new WebSocketServer({ server: echoServer, perMessageDeflate: false })
wss.on('connection', ws => ws.on('message', (data, binary) => ws.send(data, { binary })))
await new Promise(resolve => echoServer.listen(echoPort, '127.0.0.1', resolve))

async function stop () {
  await app.close()
  echoServer.close()
}

serveIpc({
  stats: () => ({
    connections: app.websocketServer.clients.size,
    handshakes: [...handshakes],
    refusedHandshakes,
    // Group members skipped because their channel was full (a live message they will not get).
    skippedFull: layer.stats.groupSendSkipped
  }),
  stop: async () => {
    await stop()
    setTimeout(() => process.exit(0), 20)
    return {}
  }
})
// The last counts go to the parent before the process exits.
process.once('SIGTERM', () => {
  stop().then(() => {
    process.send?.({ type: 'final', skippedFull: layer.stats.groupSendSkipped }, () => process.exit(0))
  }, () => process.exit(1))
})
process.send({ type: 'ready', port: app.server.address().port, echoPort: echoServer.address().port, started, pid: process.pid })
