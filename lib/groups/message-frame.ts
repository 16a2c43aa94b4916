/**
 * The `message` frame a client gets for a message of one of its groups, as text. A member's
 * unchanged copy of a group message reuses the JSON the member before got (copy-encoding.ts), and
 * the frame around it is written as JSON.stringify() writes the frame, in the same key order.
 */
import type { Delivery } from '../layers/types.js'
import type { ServerToClient } from '../protocol.js'
import { reusedEncoding } from '../json-consumer.js'

/**
 * The frame's text for `data` (what forward() returned), encoded with the consumer class'
 * `encodeJson`; undefined when that encoder gave no text. Throws what JSON cannot carry (a bigint,
 * a cycle, a function): that message fails, as a forward() that throws does.
 */
export function messageFrameText (group: string, info: Delivery, data: unknown, encode: (value: unknown) => string): string | undefined {
  const dataText = reusedEncoding(encode, data)
  if (dataText !== undefined) {
    return `{"op":"message","group":${JSON.stringify(group)}${info.offset === undefined ? '' : `,"offset":${JSON.stringify(info.offset)}`}` +
      `${info.epoch === undefined ? '' : `,"epoch":${JSON.stringify(info.epoch)}`},"data":${dataText}}`
  }
  if (typeof data === 'function' || typeof data === 'symbol') throw new TypeError(`forward() returned a ${typeof data}: JSON cannot carry it`)
  const text: unknown = encode(messageFrame(group, info, data))
  return typeof text === 'string' ? text : undefined
}

export function messageFrame (group: string, info: Delivery, data: unknown): ServerToClient {
  return { op: 'message', group, offset: info.offset, epoch: info.epoch, data }
}
