// A load-generator process: many passive WebSocket clients on raw TCP sockets. They only count
// frames and check sequence numbers (read at a fixed offset, no JSON parsing); one in `timedEvery`
// also reads the send timestamp and records the latency. A full WebSocket client (ws,
// socket.io-client) would cost more CPU per frame than the servers under test. With the `sse`
// protocol they are event-stream readers instead: a GET, then each `data:` line is a message.
import net from 'node:net'
import { randomBytes } from 'node:crypto'
import { monoMs, serveIpc } from './lib/common.js'

const OP_TEXT = 1
const OP_CLOSE = 8
const OP_PING = 9

let frames = 0 // bench frames received, all clients
let gaps = 0 // sequence numbers skipped (lost in the middle)
let dups = 0 // sequence numbers seen twice or out of order
let misrouted = 0 // frames for a group the client is not in
let unparsed = 0 // text frames that were not bench frames and not protocol chatter
let closed = 0 // connections that ended while the bench ran
let latencies = []
let sentAts = [] // each latency's scheduled send time, for where in a step the slow ones fell
const clients = []
const READ_BUFFER = Buffer.allocUnsafe(256 * 1024)
const DATA_FIELD = Buffer.from('data: ')

class Client {
  constructor (spec, protocol) {
    this.group = spec.group
    this.timed = spec.timed
    this.socketio = protocol === 'socketio'
    this.sse = protocol === 'sse'
    this.last = 0
    this.pending = null
    this.upgraded = false
    this.ready = false
    this.socket = null
    this.spec = spec
  }

  connect () {
    return new Promise((resolve, reject) => {
      const spec = this.spec
      // `onread` reads into one shared buffer and calls us directly: no stream machinery and no
      // Buffer per read, which keeps the generator's cost per frame well below the servers'.
      const socket = net.connect({ host: '127.0.0.1', port: spec.port, onread: { buffer: READ_BUFFER, callback: (n, buf) => this.onData(buf, n) } })
      this.socket = socket
      socket.setNoDelay(true)
      const timer = setTimeout(() => fail(new Error('connect timed out')), 20_000)
      const fail = err => {
        clearTimeout(timer)
        socket.destroy()
        reject(err)
      }
      this.onReady = () => {
        clearTimeout(timer)
        resolve()
      }
      socket.on('error', err => { if (!this.ready) fail(err) })
      socket.on('close', () => {
        if (this.ready) closed++
        else fail(new Error('closed during the handshake'))
      })
      socket.on('connect', () => {
        if (this.sse) {
          socket.write(`GET ${spec.path} HTTP/1.1\r\nHost: 127.0.0.1:${spec.port}\r\nAccept: text/event-stream\r\n\r\n`)
          return
        }
        socket.write(`GET ${spec.path} HTTP/1.1\r\nHost: 127.0.0.1:${spec.port}\r\nUpgrade: websocket\r\n` +
          `Connection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n` +
          'Sec-WebSocket-Version: 13\r\n\r\n')
      })
    })
  }

  /** `buf` is the shared read buffer: whatever is kept past this call must be copied. */
  onData (shared, n) {
    let buf = shared
    let length = n
    if (this.pending !== null) {
      buf = Buffer.concat([this.pending, shared.subarray(0, n)])
      length = buf.length
      this.pending = null
    }
    let offset = 0
    if (!this.upgraded) {
      const end = buf.subarray(0, length).indexOf('\r\n\r\n')
      if (end === -1) {
        this.pending = Buffer.from(buf.subarray(0, length))
        return
      }
      const status = buf.latin1Slice(0, buf.indexOf('\r\n'))
      if (!status.startsWith(this.sse ? 'HTTP/1.1 200' : 'HTTP/1.1 101')) {
        this.socket.destroy(new Error(`handshake refused: ${status}`))
        return
      }
      this.upgraded = true
      if (!this.socketio) { this.ready = true; this.onReady() }
      offset = end + 4
    }
    if (this.sse) {
      this.onEvents(buf, offset, length)
      return
    }
    while (offset + 2 <= length) {
      const b0 = buf[offset]
      let size = buf[offset + 1] & 0x7f
      let start = offset + 2
      if (size === 126) {
        if (offset + 4 > length) break
        size = buf.readUInt16BE(offset + 2)
        start = offset + 4
      } else if (size === 127) {
        if (offset + 10 > length) break
        size = Number(buf.readBigUInt64BE(offset + 2))
        start = offset + 10
      }
      const end = start + size
      if (end > length) break
      const opcode = b0 & 0x0f
      if (opcode === OP_TEXT) this.onText(buf, start, end)
      else if (opcode === OP_PING) this.write(0x8a, Buffer.from(buf.subarray(start, end)))
      else if (opcode === OP_CLOSE) this.socket.end()
      offset = end
    }
    if (offset < length) this.pending = Buffer.from(buf.subarray(offset, length))
  }

  /**
   * Event-stream bytes: the server writes each event as one HTTP chunk (`<size>\r\n`, the event,
   * `\r\n`), so only `data: ` lines need finding; the chunk framing and heartbeat comments
   * between them are skipped. `buf` beyond `length` is stale: every match is checked against it.
   */
  onEvents (buf, offset, length) {
    let at = offset
    for (;;) {
      const start = buf.indexOf(DATA_FIELD, at)
      if (start === -1 || start + DATA_FIELD.length > length) {
        // Keep a tail that may be the beginning of the next `data: `.
        const keep = Math.max(at, length - DATA_FIELD.length + 1)
        if (keep < length) this.pending = Buffer.from(buf.subarray(keep, length))
        return
      }
      const end = buf.indexOf(0x0a, start)
      if (end === -1 || end >= length) {
        this.pending = Buffer.from(buf.subarray(start, length))
        return
      }
      this.onText(buf, start + DATA_FIELD.length, end)
      at = end + 1
    }
  }

  onText (buf, start, end) {
    let i = start
    if (this.socketio) {
      // Engine.IO/Socket.IO framing: 0 open, 40 connected, 2 ping, 42["bench",{...}] an event.
      if (buf[start] === 0x34 && buf[start + 1] === 0x32) {
        i = start + 11 // 42["bench",
      } else {
        if (buf[start] === 0x30) this.write(0x81, Buffer.from('40'))
        else if (buf[start] === 0x32 && end === start + 1) this.write(0x81, Buffer.from('3'))
        else if (buf[start] === 0x34 && buf[start + 1] === 0x30 && !this.ready) { this.ready = true; this.onReady() }
        else unparsed++
        return
      }
    }
    // {"s":<seq>,"g":<group>,"t":<ms>,...
    if (buf[i + 2] !== 0x73) { unparsed++; return }
    i += 5
    let seq = 0
    let c
    while ((c = buf[i]) >= 48 && c <= 57) { seq = seq * 10 + c - 48; i++ }
    i += 5
    let group = 0
    while ((c = buf[i]) >= 48 && c <= 57) { group = group * 10 + c - 48; i++ }
    frames++
    if (group !== this.group) misrouted++
    if (seq === this.last + 1) this.last = seq
    else if (seq > this.last) { gaps += seq - this.last - 1; this.last = seq }
    else dups++
    if (this.timed) {
      i += 5
      let j = i
      while (j < end && buf[j] !== 0x2c) j++
      const sentAt = Number(buf.latin1Slice(i, j))
      latencies.push(monoMs() - sentAt)
      sentAts.push(sentAt)
    }
  }

  /** A masked client frame; the all-zero mask leaves the payload as it is. */
  write (b0, payload) {
    const header = Buffer.from([b0, 0x80 | payload.length, 0, 0, 0, 0])
    this.socket.write(Buffer.concat([header, payload]))
  }
}

async function connectAll ({ specs, protocol, concurrency }) {
  let next = 0
  let failed = 0
  let firstError
  const t0 = monoMs()
  async function worker () {
    while (next < specs.length) {
      const client = new Client(specs[next++], protocol)
      try {
        await client.connect()
        clients.push(client)
      } catch (err) {
        failed++
        firstError ??= err.message
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return { connected: clients.length, failed, firstError, ms: monoMs() - t0 }
}

serveIpc({
  connect: msg => connectAll(msg),
  snapshot: () => ({ frames, gaps, dups, misrouted, unparsed, closed, at: monoMs() }),
  latencies: () => {
    const out = { latencies, sentAts }
    latencies = []
    sentAts = []
    return out
  },
  // After a drain: whatever a client has not seen up to its group's last sequence number is lost.
  check: ({ lastSeq }) => {
    let tail = 0
    for (const client of clients) {
      const last = lastSeq[client.group] ?? 0
      if (last > client.last) {
        tail += last - client.last
        client.last = last
      }
    }
    return { tail }
  },
  exit: () => {
    setTimeout(() => process.exit(0), 10)
    return {}
  }
})

process.send({ type: 'ready', pid: process.pid })
