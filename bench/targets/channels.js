// fastify-channels as a user writes it: a JsonWebsocketConsumer that joins its group in connect()
// and relays each group message with sendJson(); publishes go through app.channelLayer.groupSend().
// The same app serves the group as server-sent events too (/sse/:group): an AsyncHttpConsumer that
// joins in handle() and relays each message with sendEvent(), for the channels-sse-* targets.
// `entry` (from --alt=<path>) loads another build, to compare a candidate change in the same run.
import Fastify from 'fastify'

// Features (bench/run.js targets): `shared` opts the consumer in to shared, read-only messages;
// `history` gives every group a history policy (size 100); `metrics` registers the metrics.
// `sync` (bench/cpu-split.js and bench/instructions.js) makes the handler a plain method that
// does not await sendJson(): what is left of a delivery without the `async` call per member, a
// shape the README allows (a send nothing awaited that fails is handled as the handler's throw
// would be). `heartbeatInterval` replaces the
// plugin's default (bench/instructions.js turns it off: a ping costs per second, not per delivery).
export async function start ({ layer: kind, redisUrl, prefix, logFile, entry, shared = false, history = false, metrics = false, sync = false, heartbeatInterval }) {
  const channels = await import(entry ?? 'fastify-channels')
  const { default: fastifyChannels, JsonWebsocketConsumer, AsyncHttpConsumer, InMemoryChannelLayer } = channels

  class BenchConsumer extends JsonWebsocketConsumer {
    static sharedMessages = shared

    async connect () {
      await this.channelLayer.groupAdd(this.scope.params.group, this.channelName)
      await this.accept()
    }

    async benchMessage (event) {
      await this.sendJson(event.payload)
    }
  }
  if (sync) {
    BenchConsumer.prototype.benchMessage = function benchMessage (event) {
      this.sendJson(event.payload)
    }
  }

  const groups = history ? { '*': { history: { size: 100, ttl: 60 } } } : undefined
  let layer
  if (kind === 'redis') {
    if (typeof channels.RedisChannelLayer !== 'function') {
      throw Object.assign(new Error('RedisChannelLayer is not exported by this build of fastify-channels'), { code: 'BENCH_UNAVAILABLE' })
    }
    layer = new channels.RedisChannelLayer({ url: redisUrl, prefix, groups })
  } else {
    layer = new InMemoryChannelLayer({ groups })
  }
  const app = Fastify({ logger: { level: 'warn', file: logFile } })
  const registry = metrics ? new (await import('prom-client')).Registry() : undefined
  await app.register(fastifyChannels, { layer, metrics: registry === undefined ? undefined : { registry }, ...(heartbeatInterval === undefined ? {} : { heartbeatInterval }) })
  app.get('/ws/:group', { websocket: true }, BenchConsumer.asHandler())

  let streams = 0
  if (typeof AsyncHttpConsumer === 'function') {
    class BenchEvents extends AsyncHttpConsumer {
      async handle () {
        await this.channelLayer.groupAdd(this.scope.params.group, this.channelName)
        await this.sendHeaders({ headers: { 'content-type': 'text/event-stream' } })
        streams++
        this.counted = true
      }

      async benchMessage (event) {
        await this.sendEvent({ data: event.payload })
      }

      async disconnect () {
        if (this.counted) streams--
      }
    }
    app.get('/sse/:group', BenchEvents.asHandler())
  }

  await app.listen({ host: '127.0.0.1', port: 0 })
  return {
    port: app.server.address().port,
    publish (group, payload) {
      return app.channelLayer.groupSend(group, { type: 'bench.message', payload })
    },
    connections: () => app.websocketServer.clients.size + streams,
    stats: () => ({ groupSendSkipped: layer.stats?.groupSendSkipped ?? 0 }),
    close: () => app.close()
  }
}
