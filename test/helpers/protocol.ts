/**
 * A client that speaks GroupsConsumer's wire protocol by hand over a real socket (`ws`), frame by
 * frame, to show what any client written from the README sees.
 */
import WebSocket from 'ws'
import { openClient, type ClientClose } from './loopback.js'

export type Frame = Record<string, unknown> & { op: string }

export interface RawProtocolClient {
  ws: WebSocket
  closed: Promise<ClientClose>
  /** Sends a value as JSON (or a string as it is). */
  send (frame: unknown): void
  /** The next frame the server sent; rejects after `ms`. */
  next (ms?: number): Promise<Frame>
  /** Frames until one matches; those before it are returned too. */
  until (match: (frame: Frame) => boolean, ms?: number): Promise<Frame[]>
  /** True when nothing arrives within `ms`. */
  nothing (ms?: number): Promise<boolean>
}

export async function rawProtocolClient (url: string): Promise<RawProtocolClient> {
  const frames: Frame[] = []
  const waiters: Array<() => void> = []
  const { ws, closed } = await openClient(url, {}, socket => {
    socket.on('message', data => {
      frames.push(JSON.parse(String(data)) as Frame)
      for (const wake of waiters.splice(0)) wake()
    })
  })
  async function next (ms = 2000): Promise<Frame> {
    const deadline = Date.now() + ms
    while (frames.length === 0) {
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no frame within ${ms} ms`)
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, left)
        waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
    return frames.shift() as Frame
  }
  return {
    ws,
    closed,
    send (frame) { ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame)) },
    next,
    async until (match, ms = 2000) {
      const seen: Frame[] = []
      for (;;) {
        const frame = await next(ms)
        seen.push(frame)
        if (match(frame)) return seen
      }
    },
    async nothing (ms = 100) {
      await new Promise(resolve => setTimeout(resolve, ms))
      return frames.length === 0
    }
  }
}
