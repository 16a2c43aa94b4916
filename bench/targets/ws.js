// The floor: raw `ws` with a Map of groups. Each message is encoded once and framed once
// (WebSocket.Sender.frame into one Buffer), then written to every local member. With Redis, each
// process holds one subscription per group that has local members and frames each message once.
import http from 'node:http'
import { Sender, WebSocketServer, WebSocket } from 'ws'

export async function start ({ layer: kind, redisUrl, prefix }) {
  const groups = new Map() // group → Set<WebSocket>
  const httpServer = http.createServer()
  const wss = new WebSocketServer({ server: httpServer, perMessageDeflate: false })
  let pub, sub
  if (kind === 'redis') {
    const { Redis } = await import('ioredis')
    pub = new Redis(redisUrl)
    sub = new Redis(redisUrl)
    const prefixLength = prefix.length + 1
    sub.on('messageBuffer', (channel, message) => fanOut(channel.latin1Slice(prefixLength), message))
  }

  function fanOut (group, data) {
    const members = groups.get(group)
    if (members === undefined) return
    const frame = [Buffer.concat(Sender.frame(data, { fin: true, opcode: 1, mask: false, readOnly: false, rsv1: false }))]
    for (const ws of members) {
      if (ws.readyState === WebSocket.OPEN) ws._sender.sendFrame(frame)
    }
  }

  wss.on('connection', (ws, req) => {
    const group = req.url.slice('/ws/'.length)
    let members = groups.get(group)
    if (members === undefined) {
      members = new Set()
      groups.set(group, members)
      sub?.subscribe(`${prefix}:${group}`)
    }
    members.add(ws)
    ws.on('error', () => {})
    ws.on('close', () => {
      members.delete(ws)
      if (members.size === 0 && groups.get(group) === members) {
        groups.delete(group)
        sub?.unsubscribe(`${prefix}:${group}`)
      }
    })
  })
  await new Promise(resolve => httpServer.listen(0, '127.0.0.1', resolve))
  return {
    port: httpServer.address().port,
    publish: kind === 'redis'
      ? (group, payload) => pub.publish(`${prefix}:${group}`, JSON.stringify(payload))
      : (group, payload) => fanOut(group, Buffer.from(JSON.stringify(payload))),
    connections: () => wss.clients.size,
    close: async () => {
      for (const ws of wss.clients) ws.terminate()
      await new Promise(resolve => wss.close(resolve))
      pub?.disconnect()
      sub?.disconnect()
    }
  }
}
