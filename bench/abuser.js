// One kind of abuse against the bench server, in its own process so that its work does not
// delay the witness measured in the harness. Runs until the harness asks for `stop`, then
// reports what it did and what the server answered.
//   node bench/abuser.js <frames|never-reads|handshakes> <ws url> <local address>
// - frames: opens a socket and sends small `call` frames as fast as the socket takes them; when
//   the server closes it, waits 200 ms and opens another.
// - never-reads: opens a socket, stops reading, sends 200 calls whose replies are 60 KB each, then
//   reads again to find how the server closed it; and again.
// - handshakes: opens 20 handshakes at a time, in a loop, and closes those that are upgraded.
import WebSocket from 'ws'
import { serveIpc, sleep } from './lib/common.js'

const [kind, url, localAddress] = process.argv.slice(2)
let running = true
const counts = { sockets: 0, frames: 0, closes: {}, statuses: {} }

const bump = (table, key) => { table[key] = (table[key] ?? 0) + 1 }

function open () {
  counts.sockets++
  const ws = new WebSocket(url, { localAddress, perMessageDeflate: false })
  let upgraded = false
  // How an upgraded socket ended: the code and the reason's first words (`1008 rate limit`).
  const closed = new Promise(resolve => ws.once('close', (code, reason) => {
    if (upgraded) bump(counts.closes, `${code} ${String(reason).split(':')[0]}`.trim())
    resolve()
  }))
  const opened = new Promise(resolve => {
    ws.once('open', () => {
      upgraded = true
      bump(counts.statuses, 101)
      resolve(true)
    })
    ws.once('unexpected-response', (_req, res) => { res.resume(); bump(counts.statuses, res.statusCode); resolve(false) })
    ws.once('error', () => resolve(false))
  })
  return { ws, opened, closed }
}

function call (ws, id, args) {
  counts.frames++
  ws.send(JSON.stringify({ op: 'call', id, action: 'echo', args }))
}

const kinds = {
  async frames () {
    while (running) {
      const { ws, opened, closed } = open()
      if (await opened) {
        for (let i = 0; running && ws.readyState === WebSocket.OPEN; i++) {
          call(ws, i % 1_000_000, { i })
          // What the server does not read waits here; keep the client's own memory bounded.
          if (i % 100 === 99) {
            await new Promise(resolve => setImmediate(resolve))
            while (running && ws.readyState === WebSocket.OPEN && ws.bufferedAmount > 1024 * 1024) await sleep(5)
          }
        }
        ws.terminate()
        await closed
      }
      await sleep(200)
    }
  },

  async 'never-reads' () {
    const big = 'x'.repeat(60_000)
    while (running) {
      const { ws, opened, closed } = open()
      if (await opened) {
        ws.pause()
        for (let i = 0; i < 200 && ws.readyState === WebSocket.OPEN; i++) {
          call(ws, i, { big })
          if (i % 20 === 19) await sleep(5)
        }
        await sleep(300)
        ws.resume()
        await Promise.race([closed, sleep(5000)])
        ws.terminate()
        await closed
      }
      await sleep(50)
    }
  },

  async handshakes () {
    while (running) {
      await Promise.all(Array.from({ length: 20 }, async () => {
        const { ws, opened, closed } = open()
        if (await opened) {
          ws.close()
          await closed
        }
      }))
    }
  }
}

const done = kinds[kind]()
serveIpc({
  stop: async () => {
    running = false
    await done
    return { counts }
  }
})
process.send({ type: 'ready' })
