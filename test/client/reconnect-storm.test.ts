/**
 * 150 clients whose server restarts: their reconnect attempts spread out (full jitter), none of
 * them ever holds two sockets, none loops, and each ends with exactly one socket at the server,
 * re-joined. The attempts are recorded by the WebSocket class each client is given (ws, wrapped).
 * No timing is asserted beyond the spread, with a generous statistical bound. The spread is read
 * from when each client planned its first attempt (its 'reconnecting' event and delay), checked
 * against when it made it: 150 timers due together fire late and bunched on a busy machine, which
 * is the event loop's doing, not the client's.
 */
import t from 'tap'
import WebSocket from 'ws'
import { ChannelsClient, type WebSocketConstructor } from '../../lib/client/index.js'
import { eventually } from '../helpers/app.js'
import { roomsApp, type RoomsApp } from '../groups/rooms.js'

const CLIENTS = 150

interface Record { attempts: number[], planned: number[], live: number, overlaps: number, gaps: number }

/** A ws WebSocket that records, for one client, when it was opened and how many were alive at once. */
function tracked (record: Record): WebSocketConstructor {
  return class TrackedWebSocket extends WebSocket {
    constructor (url: string, protocols?: string | string[]) {
      if (record.live > 0) record.overlaps++
      record.live++
      record.attempts.push(performance.now())
      super(url, protocols)
      this.once('close', () => { record.live-- })
    }
  }
}

t.test(`${CLIENTS} clients and a server restart`, async t => {
  let server: RoomsApp = await roomsApp()
  t.teardown(() => server.app.close())
  const records: Record[] = []
  const clients: ChannelsClient[] = []
  const joins: Array<Promise<unknown>> = []
  t.teardown(() => { for (const c of clients) c.close() })
  for (let i = 0; i < CLIENTS; i++) {
    const record: Record = { attempts: [], planned: [], live: 0, overlaps: 0, gaps: 0 }
    const c = new ChannelsClient(server.url, { WebSocket: tracked(record) })
    c.on('state', (state, detail) => { if (state === 'reconnecting') record.planned.push(performance.now() + (detail.delay as number)) })
    joins.push(c.join('room.storm', { gap () { record.gaps++ } }).ready)
    records.push(record)
    clients.push(c)
  }
  await Promise.all(joins)
  t.equal(server.app.websocketServer.clients.size, CLIENTS, `${CLIENTS} clients connected and joined`)

  const port = server.port
  const down = performance.now()
  await server.app.close()
  await new Promise(resolve => setTimeout(resolve, 300))
  server = await roomsApp({}, undefined, port)
  await eventually(() => clients.every(c => c.state === 'open') && records.every(r => r.gaps === 1), 30_000)
  // Let any straggler that would open a second socket show itself.
  await new Promise(resolve => setTimeout(resolve, 500))

  t.equal(server.app.websocketServer.clients.size, CLIENTS, 'one socket per client at the server')
  t.same(records.filter(r => r.overlaps > 0).length, 0, 'no client ever had two sockets alive at once')
  t.same(records.filter(r => r.live !== 1).length, 0, 'each client holds exactly one socket')
  t.equal(records.filter(r => r.gaps === 1).length, CLIENTS, 'each re-joined once and was told its history was lost (in-memory layer)')
  t.equal((await server.app.channelLayer.presence('room.storm')).length, CLIENTS, 'the group has every member back, once')

  const firstRetries = records.map(r => (r.planned[0] as number) - down)
  const early = records.filter(r => (r.attempts.find(at => at > down) as number) < (r.planned[0] as number) - 2)
  t.equal(early.length, 0, 'no client made its first attempt before the time it planned for it')
  const spread = Math.max(...firstRetries) - Math.min(...firstRetries)
  t.ok(spread > 150, `the first reconnect attempts are spread out (${spread.toFixed(0)} ms between the first and the last)`)
  const sorted = [...firstRetries].sort((a, b) => a - b)
  let crowded = 0
  for (let i = 0, j = 0; i < sorted.length; i++) {
    while (sorted[i] - sorted[j] > 10) j++
    crowded = Math.max(crowded, i - j + 1)
  }
  t.ok(crowded < CLIENTS / 5, `at most ${crowded} of ${CLIENTS} first attempts are planned within any 10 ms`)
  const most = Math.max(...records.map(r => r.attempts.length))
  t.ok(most <= 8, `no reconnect loop: at most ${most} sockets opened by one client in all`)
})
