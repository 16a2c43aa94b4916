// fastify-channels as a user writes it: a JsonWebsocketConsumer that joins its group in connect()
// and relays each group message with sendJson(); publishes go through app.channelLayer.groupSend().
// `entry` (from --alt=<path>) loads another build, to compare a candidate change in the same run.
import Fastify from 'fastify'

export async function start ({ layer: kind, redisUrl, prefix, logFile, entry }) {
  const channels = await import(entry ?? 'fastify-channels')
  const { default: fastifyChannels, JsonWebsocketConsumer, InMemoryChannelLayer } = channels

  class BenchConsumer extends JsonWebsocketConsumer {
    async connect () {
      await this.channelLayer.groupAdd(this.scope.params.group, this.channelName)
      await this.accept()
    }

    async benchMessage (event) {
      await this.sendJson(event.payload)
    }
  }

  let layer
  if (kind === 'redis') {
    if (typeof channels.RedisChannelLayer !== 'function') {
      throw Object.assign(new Error('RedisChannelLayer is not exported by this build of fastify-channels'), { code: 'BENCH_UNAVAILABLE' })
    }
    layer = new channels.RedisChannelLayer({ url: redisUrl, prefix })
  } else {
    layer = new InMemoryChannelLayer()
  }
  const app = Fastify({ logger: { level: 'warn', file: logFile } })
  await app.register(fastifyChannels, { layer })
  app.get('/ws/:group', { websocket: true }, BenchConsumer.asHandler())
  await app.listen({ host: '127.0.0.1', port: 0 })
  return {
    port: app.server.address().port,
    publish (group, payload) {
      return app.channelLayer.groupSend(group, { type: 'bench.message', payload })
    },
    connections: () => app.websocketServer.clients.size,
    stats: () => ({ groupSendSkipped: layer.stats?.groupSendSkipped ?? 0 }),
    close: () => app.close()
  }
}
