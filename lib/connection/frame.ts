/**
 * Text frames built once for many sockets. A group message is, for most consumers, the same text
 * for every local member, sent one member after the other within one `groupSend()`; framing it
 * once and writing the same bytes to each socket is what a hand-written `ws` broadcast does.
 *
 * This writes through `ws`' own Sender (`sendFrame`, the step `ws.send()` ends with), and only on
 * a socket where `ws.send()` would do exactly that: no extension negotiated (a compressed socket
 * frames per socket), the socket OPEN and nothing queued in the Sender ahead of us. Anything else
 * goes through `ws.send()`.
 */
import type { WebSocket } from 'ws'

/** The parts of ws' Sender this relies on: a queue state (0 = idle) and the frame writer. */
export interface FrameSender {
  _state: unknown
  sendFrame: (list: Buffer[], cb?: () => void) => void
}

// Texts larger than this are framed per socket: keeping one alive between sends costs memory.
const MAX_SHARED_TEXT = 64 * 1024

let lastText: string | undefined
let lastFrame: Buffer[] = []

/** The socket's Sender when frames may be written to it directly; null when it must go through `ws.send()`. */
export function frameSender (socket: WebSocket): FrameSender | null {
  const sender = (socket as unknown as { _sender?: Partial<FrameSender> })._sender
  if (sender === undefined || typeof sender.sendFrame !== 'function' || socket.extensions !== '') return null
  return sender as FrameSender
}

/** Writes `text` as one frame; false (nothing written) when it must go through `ws.send()`. */
export function writeText (socket: WebSocket, sender: FrameSender, text: string): boolean {
  // Not OPEN: ws.send() knows what to do after a close frame (never write data after one).
  if (socket.readyState !== 1 || sender._state !== 0 || text.length > MAX_SHARED_TEXT) return false
  if (text !== lastText) {
    lastFrame = [textFrame(text)]
    lastText = text
  }
  sender.sendFrame(lastFrame)
  return true
}

/** One unmasked, unfragmented text frame (RFC 6455 §5.2), header and payload in one Buffer. */
function textFrame (text: string): Buffer {
  const length = Buffer.byteLength(text)
  const header = length < 126 ? 2 : length < 65536 ? 4 : 10
  const frame = Buffer.allocUnsafe(header + length)
  frame[0] = 0x81 // FIN, opcode 1 (text)
  if (header === 2) {
    frame[1] = length
  } else if (header === 4) {
    frame[1] = 126
    frame.writeUInt16BE(length, 2)
  } else {
    frame[1] = 127
    frame.writeUInt16BE(0, 2)
    frame.writeUIntBE(length, 4, 6)
  }
  frame.write(text, header, 'utf8')
  return frame
}
