/**
 * What a client gets for a message of one of its groups: what `forward()` makes of it, in a
 * `message` frame, as text. A member's unchanged copy of a group message reuses the JSON the member
 * before got (copy-encoding.ts), and the frame around it is written as JSON.stringify() writes the
 * frame, in the same key order.
 */
import type { Delivery, LayerMessage } from '../layers/types.js'
import type { ServerToClient } from '../protocol.js'
import { JsonWebsocketConsumer, reusedEncoding } from '../json-consumer.js'
import { isThenable } from '../connection/tasks.js'
import type { GroupsConsumer } from './consumer.js'

/**
 * Sends the client `forward(message, info)`, unless that is undefined. A forward() that fails, or
 * returns what JSON cannot carry, drops that message only, logged at error: failing the
 * connection would have its client re-join from the same position, get the same message, and
 * fail again.
 */
export function forwardToClient (consumer: GroupsConsumer, group: string, message: LayerMessage, info: Delivery): Promise<void> | undefined {
  let data: unknown
  try {
    data = consumer.forward(message, info)
  } catch (err) {
    forwardFailed(consumer, err, group, info)
    return undefined
  }
  if (isThenable(data)) {
    // Any thenable, as `await` would take it (one that is not a Promise too).
    return Promise.resolve(data).then(async reshaped => { await send(consumer, group, info, reshaped) }, (err: unknown) => { forwardFailed(consumer, err, group, info) })
  }
  return send(consumer, group, info, data)
}

function send (consumer: GroupsConsumer, group: string, info: Delivery, data: unknown): Promise<void> | undefined {
  if (data === undefined) return undefined
  if (consumer.sendJson !== JsonWebsocketConsumer.prototype.sendJson) return consumer.sendJson(messageFrame(group, info, data))
  let text: string | undefined
  try {
    text = messageFrameText(group, info, data, (consumer.constructor as typeof JsonWebsocketConsumer).encodeJson)
  } catch (err) {
    forwardFailed(consumer, err, group, info)
    return undefined
  }
  return text !== undefined ? consumer.send(text) : consumer.sendJson(messageFrame(group, info, data))
}

function forwardFailed (consumer: GroupsConsumer, err: unknown, group: string, info: Delivery): void {
  consumer.log.error({ err, group, offset: info.offset, channel: consumer.channelName }, 'forward() failed; the message is not sent to this client')
}

/**
 * The frame's text for `data` (what forward() returned), encoded with the consumer class'
 * `encodeJson`; undefined when that encoder gave no text. Throws what JSON cannot carry (a bigint,
 * a cycle, a function): that message fails, as a forward() that throws does.
 */
function messageFrameText (group: string, info: Delivery, data: unknown, encode: (value: unknown) => string): string | undefined {
  const dataText = reusedEncoding(encode, data)
  if (dataText !== undefined) {
    return `{"op":"message","group":${JSON.stringify(group)}${info.offset === undefined ? '' : `,"offset":${JSON.stringify(info.offset)}`}` +
      `${info.epoch === undefined ? '' : `,"epoch":${JSON.stringify(info.epoch)}`},"data":${dataText}}`
  }
  if (typeof data === 'function' || typeof data === 'symbol') throw new TypeError(`forward() returned a ${typeof data}: JSON cannot carry it`)
  const text: unknown = encode(messageFrame(group, info, data))
  return typeof text === 'string' ? text : undefined
}

function messageFrame (group: string, info: Delivery, data: unknown): ServerToClient {
  return { op: 'message', group, offset: info.offset, epoch: info.epoch, data }
}
