/**
 * Text frames built once for many sockets. A group message is, for most consumers, the same text
 * for every local member, sent one member after the other within one `groupSend()`; framing it
 * once and writing the same bytes to each socket is what a hand-written `ws` broadcast does.
 * The frame goes through ws' own frame writer (see internals.ts) where ws.send() would write
 * exactly that; anything else goes through `ws.send()`.
 */
import { writeFrame, type FrameWriter } from '../internals.js'

// Texts larger than this are framed per socket: keeping one alive between sends costs memory.
const MAX_SHARED_TEXT = 64 * 1024

let lastText: string | undefined
let lastFrame: Buffer[] = []

/** Writes `text` as one frame; false (nothing written) when it must go through `ws.send()`. */
export function writeText (socket: { readonly readyState: number }, writer: FrameWriter, text: string): boolean {
  if (text.length > MAX_SHARED_TEXT) return false
  if (text !== lastText) {
    lastFrame = [textFrame(text)]
    lastText = text
  }
  return writeFrame(socket, writer, lastFrame)
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
