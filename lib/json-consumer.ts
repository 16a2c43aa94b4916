/**
 * `JsonWebsocketConsumer`: text frames carry JSON. Decoding is safe against prototype poisoning
 * and against nesting deep enough to overflow the stack later (in `JSON.stringify`, in a layer
 * copy); a frame that is not acceptable JSON closes only its own connection, with 1003.
 */
import secureJson from 'secure-json-parse'
import { WebsocketConsumer } from './consumer.js'
import { reserveNames } from './dispatch.js'
import { isShared } from './layers/message.js'
import { encodingOfCopy } from './layers/copy-encoding.js'
import { InvalidOptionError } from './errors.js'
import { isThenable } from './connection/tasks.js'
import { sendFailure } from './connection/unawaited-failure.js'
import { kConnection } from './base-consumer.js'

export const kRefuseFrame = Symbol('fastify-channels.refuseFrame')

/** Deepest nesting a decoded frame may have: half the layer's 64, so a frame wrapped into a layer message still fits. */
export const MAX_JSON_DEPTH = 32

export class JsonWebsocketConsumer extends WebsocketConsumer {
  /** Encodes an outgoing value; override for another encoding. */
  static encodeJson (value: unknown): string {
    return JSON.stringify(value)
  }

  /** Decodes an incoming text frame; throw to refuse it (the connection closes with 1003). */
  static decodeJson (text: string): unknown {
    const value: unknown = secureJson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' })
    const depth = nestingDepth(value)
    if (depth > MAX_JSON_DEPTH) throw new Error(`nested deeper than ${MAX_JSON_DEPTH} levels`)
    return value
  }

  override receive (text: string | undefined, bytes: Buffer | undefined): void | Promise<void> {
    return this.#decode(text, bytes)
  }

  async #decode (text: string | undefined, bytes: Buffer | undefined): Promise<void> {
    if (text === undefined) {
      await this[kRefuseFrame]('binary frames are not accepted: send JSON text', { bytes: bytes?.length })
      return
    }
    const ctor = this.constructor as typeof JsonWebsocketConsumer
    let content: unknown
    try {
      content = ctor.decodeJson(text)
    } catch (err) {
      // V8's syntax errors quote the frame (a password in it, say): the reason, logged and sent
      // back, keeps only what went wrong, and the error itself is not logged.
      if (err instanceof SyntaxError) await this[kRefuseFrame](`invalid JSON: ${withoutExcerpt(err.message)}`, {})
      else await this[kRefuseFrame](`invalid JSON: ${err instanceof Error ? err.message : String(err)}`, { err })
      return
    }
    // Channels' decode_json may be async; here it is not: the app's mistake, said as such (1011).
    if (isThenable(content)) throw new InvalidOptionError(`${ctor.name}.decodeJson() returned a promise: it must return the decoded value (it cannot be async)`)
    await this.receiveJson(content)
  }

  /**
   * A frame that is not acceptable JSON: closes with 1003 and `reason`. A subclass speaking a
   * protocol that answers such frames instead (GroupsConsumer) overrides it.
   */
  async [kRefuseFrame] (reason: string, detail: object): Promise<void> {
    this.log.warn({ channel: this.channelName, ...detail, reason }, 'frame refused by a JSON consumer; closing with 1003')
    await this.close(1003, reason)
  }

  /** One decoded JSON frame. */
  receiveJson (content: unknown): void | Promise<void> {}

  /**
   * Sends `content` as one JSON text frame. Content that belongs to a shared message (see
   * `sharedMessages`) cannot change, so the members it goes to in a row reuse one encoding; so do
   * members whose own copy of a group message is unchanged when they send it (copy-encoding.ts).
   */
  sendJson (content: unknown): Promise<void> {
    let text: string
    try {
      const encode = (this.constructor as typeof JsonWebsocketConsumer).encodeJson
      if (content === lastShared && encode === lastEncoder) {
        text = lastText
      } else {
        text = reusedEncoding(encode, content) ?? encode(content)
        // JSON.stringify(undefined), or of a function: nothing to send, and no `null` meant.
        if (typeof text !== 'string') {
          throw new InvalidOptionError(isThenable(text)
            ? `${this.constructor.name}.encodeJson() returned a promise: it must return the text (it cannot be async)`
            : encode !== defaultEncodeJson
              ? `${this.constructor.name}.encodeJson() returned ${text === null ? 'null' : typeof text}: it must return the text`
              : `sendJson(content) takes a value JSON can encode, got ${typeof content}`)
        }
        if (isShared(content)) {
          lastShared = content
          lastEncoder = encode
          lastText = text
        }
      }
    } catch (err) {
      return sendFailure(err, this[kConnection])
    }
    return this.send(text)
  }
}

reserveNames(JsonWebsocketConsumer.prototype)

// The encoder a consumer has unless it overrides `encodeJson`: only its encodings are reused
// between members (copy-encoding.ts).
const defaultEncodeJson = JsonWebsocketConsumer.encodeJson

/**
 * The JSON of `content` as the member before got it, when `content` is a member's unchanged copy
 * of the group message being fanned out and `encode` (a consumer class' `encodeJson`) is
 * `JSON.stringify` itself; undefined otherwise (encode it as usual).
 */
export function reusedEncoding (encode: (value: unknown) => string, content: unknown): string | undefined {
  return encode === defaultEncodeJson ? encodingOfCopy(content) : undefined
}

// The last shared content encoded, with the encoder that did it: the next member's sendJson of it
// (a fan-out goes member after member) reuses the text.
let lastShared: unknown
let lastEncoder: ((value: unknown) => string) | undefined
let lastText = ''

/**
 * A JSON syntax error's message without the part of the text it quotes: `Unexpected token 'h',
 * "{"pw":hunter2}" is not valid JSON` → `Unexpected token 'h'`.
 */
function withoutExcerpt (message: string): string {
  const quoted = message.search(/, (?:\.\.\.)?"/)
  return quoted < 0 ? message : message.slice(0, quoted)
}

/** Iterative, so hostile input cannot overflow the stack while being measured. */
function nestingDepth (value: unknown): number {
  if (value === null || typeof value !== 'object') return 0
  let max = 0
  const stack: Array<[object, number]> = [[value, 1]]
  while (stack.length > 0) {
    const [node, depth] = stack.pop() as [object, number]
    if (depth > max) max = depth
    if (max > MAX_JSON_DEPTH) return max
    for (const child of Object.values(node)) {
      if (child !== null && typeof child === 'object') stack.push([child, depth + 1])
    }
  }
  return max
}
