/**
 * The `text/event-stream` wire format (the WHATWG HTML standard, "Server-sent events"): one event
 * is `id:`, `event:` and `data:` lines and a blank line. A field value cannot hold a line break —
 * the reader would take what follows as a field of its own (another `id`, another event) — so
 * `event` and `id` are refused when they hold one, and `data` is split into one `data:` line per
 * line, which the reader joins back with `\n`.
 */
import { InvalidEventError } from './errors.js'
import { encodingOfCopy } from './layers/copy-encoding.js'

export interface ServerSentEvent {
  /** A string is sent as it is (a line per `data:` field); anything else as its JSON. */
  data: unknown
  /** The event's name, for `source.addEventListener(name, …)`; unnamed events go to `onmessage`. */
  event?: string | undefined
  /** Becomes the browser's `lastEventId`, sent back as `Last-Event-ID` when it reconnects. */
  id?: string | number | undefined
}

/** The head an event stream starts with unless the consumer chose its own. */
export const EVENT_STREAM_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  // Every event must reach the reader when it is written: no cache, no proxy buffering (nginx).
  'cache-control': 'no-cache',
  'x-accel-buffering': 'no'
} as const

/**
 * A comment line: readers ignore it, proxies see traffic. No blank line after it: that would end
 * an event an app writes in pieces (sendBody with `more`) between two of them.
 */
export const HEARTBEAT_COMMENT = ':\n'

const LINE_BREAK = /\r\n|\r|\n/

export function isEventStream (contentType: unknown): boolean {
  return typeof contentType === 'string' && /^\s*text\/event-stream\s*(;|$)/i.test(contentType)
}

/** One event, as the bytes of the stream; throws InvalidEventError for what cannot be written safely. */
export function encodeEvent (message: ServerSentEvent): string {
  if (message === null || typeof message !== 'object') {
    throw new InvalidEventError('sendEvent() takes { data, event?, id? }')
  }
  const { data, event, id } = message
  let text = ''
  if (id !== undefined) {
    const value = typeof id === 'number' && Number.isFinite(id) ? String(id) : id
    if (typeof value !== 'string') throw new InvalidEventError('sendEvent(): id must be a string or a finite number')
    // A NUL makes the reader ignore the id: refused as well, so the id a client keeps is the one sent.
    if (LINE_BREAK.test(value) || value.includes('\0')) throw new InvalidEventError('sendEvent(): id must not contain a line break or NUL')
    text += `id: ${value}\n`
  }
  if (event !== undefined) {
    if (typeof event !== 'string') throw new InvalidEventError('sendEvent(): event must be a string')
    if (LINE_BREAK.test(event)) throw new InvalidEventError('sendEvent(): event must not contain a line break')
    text += `event: ${event}\n`
  }
  for (const line of dataText(data).split(LINE_BREAK)) text += `data: ${line}\n`
  return text + '\n'
}

function dataText (data: unknown): string {
  if (typeof data === 'string') return data
  if (data === undefined) throw new InvalidEventError('sendEvent(): data is required')
  let json: string | undefined
  try {
    // A member's unchanged copy of a group message: the text the member before got (copy-encoding.ts).
    json = encodingOfCopy(data) ?? JSON.stringify(data)
  } catch (err) {
    throw new InvalidEventError(`sendEvent(): data cannot be encoded as JSON: ${(err as Error).message}`)
  }
  if (json === undefined) throw new InvalidEventError(`sendEvent(): data cannot be encoded as JSON (${typeof data})`)
  return json
}
