// Socket.IO as its docs suggest: rooms, io.to(room).emit(); websocket transport only, no compression.
// With the Redis adapter, emits from one process reach the rooms' members in every process.
import http from 'node:http'
import { Server } from 'socket.io'

export async function start ({ layer: kind, redisUrl, prefix }) {
  const httpServer = http.createServer()
  const io = new Server(httpServer, {
    transports: ['websocket'],
    perMessageDeflate: false,
    httpCompression: false,
    serveClient: false
  })
  const redisClients = []
  if (kind === 'redis') {
    const { createAdapter } = await import('@socket.io/redis-adapter')
    const { Redis } = await import('ioredis')
    const pub = new Redis(redisUrl)
    const sub = pub.duplicate()
    redisClients.push(pub, sub)
    io.adapter(createAdapter(pub, sub, { key: prefix }))
  }
  io.on('connection', socket => {
    socket.join(socket.handshake.query.g)
  })
  await new Promise(resolve => httpServer.listen(0, '127.0.0.1', resolve))
  return {
    port: httpServer.address().port,
    publish (group, payload) {
      io.to(group).emit('bench', payload)
    },
    connections: () => io.engine.clientsCount,
    close: async () => {
      await io.close()
      for (const c of redisClients) c.disconnect()
    }
  }
}
