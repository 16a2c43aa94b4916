/**
 * Real TCP on 127.0.0.1, for what injectWS cannot show: a peer that does not answer pings, a peer
 * that stops reading, and hand-made bytes that break the WebSocket protocol.
 */
import { connect, type Socket } from 'node:net'
import { randomBytes } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import WebSocket from 'ws'

/** Listens on a free loopback port; returns `ws://127.0.0.1:<port>`. */
export async function listen (app: FastifyInstance): Promise<{ url: string, port: number }> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no TCP address')
  return { url: `ws://127.0.0.1:${address.port}`, port: address.port }
}

export interface ClientClose { code: number, reason: string }

/**
 * A `ws` client; resolves once open (rejects on a refused handshake with the HTTP status).
 * `setup` sees the socket before any frame can arrive.
 */
export async function openClient (url: string, options: WebSocket.ClientOptions = {}, setup?: (ws: WebSocket) => void): Promise<{ ws: WebSocket, closed: Promise<ClientClose> }> {
  const ws = new WebSocket(url, options)
  setup?.(ws)
  const closed = new Promise<ClientClose>(resolve => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })))
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve)
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)))
    ws.once('error', reject)
  })
  return { ws, closed }
}

/** What a raw connection saw: the HTTP status of the handshake, and the close frame if any. */
export interface RawResult {
  status: number
  close: ClientClose | null
}

function handshakeRequest (path: string, headers: Record<string, string | undefined>): string {
  const all: Record<string, string | undefined> = {
    host: '127.0.0.1',
    connection: 'Upgrade',
    upgrade: 'websocket',
    'sec-websocket-version': '13',
    'sec-websocket-key': randomBytes(16).toString('base64'),
    ...headers
  }
  const lines = Object.entries(all).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}: ${String(v)}`)
  return `GET ${path} HTTP/1.1\r\n${lines.join('\r\n')}\r\n\r\n`
}

/**
 * Opens a raw TCP connection and sends a WebSocket handshake for `path`, leaving the rest to the
 * caller: a client that can reset its connection, or end its side, before the answer.
 */
export function rawHandshake (port: number, path: string): Socket {
  const socket = connect(port, '127.0.0.1')
  socket.on('error', () => {})
  socket.write(handshakeRequest(path, { host: `127.0.0.1:${port}` }))
  return socket
}

/**
 * Opens a raw TCP connection, sends a handshake (headers may be overridden, or removed with
 * undefined), and once upgraded writes `frames` as they are. Resolves when the server ends the
 * connection, with the status and the close frame it sent.
 */
export async function rawSession (port: number, path: string, headers: Record<string, string | undefined>, frames: Buffer[] = []): Promise<RawResult> {
  const socket: Socket = connect(port, '127.0.0.1')
  let received = Buffer.alloc(0)
  let status = 0
  let close: ClientClose | null = null
  let bodyStart = -1
  return await new Promise<RawResult>((resolve, reject) => {
    socket.on('error', err => {
      // A reset after the server closed is the end we wait for anyway.
      if (status !== 0) resolve({ status, close })
      else reject(err)
    })
    socket.on('close', () => resolve({ status, close }))
    socket.on('data', chunk => {
      received = Buffer.concat([received, chunk])
      if (status === 0) {
        const end = received.indexOf('\r\n\r\n')
        if (end === -1) return
        status = Number(/^HTTP\/1\.1 (\d{3})/.exec(received.subarray(0, end).toString('latin1'))?.[1] ?? -1)
        bodyStart = end + 4
        if (status === 101) for (const frame of frames) socket.write(frame)
        else socket.end()
      }
      if (status === 101 && close === null) {
        close = findCloseFrame(received.subarray(bodyStart))
        if (close !== null) socket.end()
      }
    })
    socket.write(handshakeRequest(path, headers))
  })
}

// Server frames are unmasked; walks them until a close frame (opcode 8).
function findCloseFrame (data: Buffer): ClientClose | null {
  let at = 0
  while (at + 2 <= data.length) {
    const opcode = data[at] & 0x0f
    const short = data[at + 1] & 0x7f
    const header = short === 126 ? 4 : short === 127 ? 10 : 2
    if (at + header > data.length) return null
    const length = short === 126 ? data.readUInt16BE(at + 2) : short === 127 ? Number(data.readBigUInt64BE(at + 2)) : short
    if (at + header + length > data.length) return null
    const payload = data.subarray(at + header, at + header + length)
    if (opcode === 8) {
      return payload.length >= 2 ? { code: payload.readUInt16BE(0), reason: payload.subarray(2).toString() } : { code: 1005, reason: '' }
    }
    at += header + length
  }
  return null
}

export interface FrameOptions {
  fin?: boolean
  rsv1?: boolean
  mask?: boolean
}

/** One WebSocket frame, built by hand so it may break the rules. */
export function frame (opcode: number, payload: Buffer | string, { fin = true, rsv1 = false, mask = true }: FrameOptions = {}): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload
  const first = (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0x0f)
  let lengthBytes: Buffer
  if (body.length < 126) {
    lengthBytes = Buffer.from([body.length])
  } else if (body.length < 65536) {
    lengthBytes = Buffer.alloc(3)
    lengthBytes[0] = 126
    lengthBytes.writeUInt16BE(body.length, 1)
  } else {
    lengthBytes = Buffer.alloc(9)
    lengthBytes[0] = 127
    lengthBytes.writeBigUInt64BE(BigInt(body.length), 1)
  }
  if (mask) lengthBytes[0] |= 0x80
  if (!mask) return Buffer.concat([Buffer.from([first]), lengthBytes, body])
  const key = randomBytes(4)
  const masked = Buffer.from(body.map((b, i) => b ^ key[i % 4]))
  return Buffer.concat([Buffer.from([first]), lengthBytes, key, masked])
}
