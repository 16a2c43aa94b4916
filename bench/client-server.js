// The server side of bench/client-bench.js, in its own process: a GroupsConsumer with an `echo`
// action at /ws (fastify-channels as a user writes it) and, on another port, a raw `ws` echo server
// (the floor for a call's round trip). Counts WebSocket handshakes per 100 ms, for the storm.
//   node bench/client-server.js [port] [echoPort]     (0: any free port)
import http from 'node:http'
import Fastify from 'fastify'
import { WebSocketServer } from 'ws'
import fastifyChannels, { GroupsConsumer } from 'fastify-channels'
import { serveIpc } from './lib/common.js'

const [port = 0, echoPort = 0] = process.argv.slice(2).map(Number)
const started = performance.timeOrigin + performance.now()
const handshakes = new Map() // 100 ms bucket (since the epoch) → count

class BenchConsumer extends GroupsConsumer {
  static actions = { echo: {} }
  canJoin () { return true }
  async echo (args) { return args }
}

const app = Fastify({ logger: false })
await app.register(fastifyChannels, { heartbeatInterval: 0 })
app.addHook('onRequest', async () => {
  const bucket = Math.floor((performance.timeOrigin + performance.now()) / 100)
  handshakes.set(bucket, (handshakes.get(bucket) ?? 0) + 1)
})
app.get('/ws', { websocket: true }, BenchConsumer.asHandler())
await app.listen({ port, host: '127.0.0.1' })

const echoServer = http.createServer()
const wss = new WebSocketServer({ server: echoServer, perMessageDeflate: false })
wss.on('connection', ws => ws.on('message', (data, binary) => ws.send(data, { binary })))
await new Promise(resolve => echoServer.listen(echoPort, '127.0.0.1', resolve))

serveIpc({
  stats: () => ({ connections: app.websocketServer.clients.size, handshakes: [...handshakes] }),
  stop: async () => {
    await app.close()
    echoServer.close()
    setTimeout(() => process.exit(0), 20)
    return {}
  }
})
process.send({ type: 'ready', port: app.server.address().port, echoPort: echoServer.address().port, started })
