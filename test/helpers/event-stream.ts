/**
 * A streaming HTTP client for tests, over a real socket (Fastify's inject cannot stream): reads a
 * response as it comes and parses it as an event stream the way a browser's EventSource does
 * (fields `id`, `event`, `data`; comment lines; a blank line dispatches), keeping the raw body too.
 */
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http'

export interface StreamEvent {
  event: string
  data: string
  id: string
}

export interface EventStream {
  status: number
  headers: IncomingHttpHeaders
  /** Every event dispatched so far. */
  events: StreamEvent[]
  /** Comment lines seen so far (heartbeats). */
  comments: number
  /** The body as received so far. */
  body: () => string
  /** Resolves once the server ended the response (true) or the connection broke (false). */
  ended: Promise<boolean>
  /** Waits until `count` events have arrived; rejects after `ms`. */
  waitForEvents: (count: number, ms?: number) => Promise<StreamEvent[]>
  /** Goes away, as a closed browser tab does. */
  close: () => void
  response: IncomingMessage
}

/** GET `url`; resolves once the head has arrived. */
export async function openEventStream (url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<EventStream> {
  const response = await new Promise<IncomingMessage>((resolve, reject) => {
    // A connection of its own, as a browser's EventSource has: never one a stream before it left.
    const req = httpRequest(url, { method, agent: false, headers: { accept: 'text/event-stream', ...headers } }, resolve)
    req.on('error', reject)
    req.end()
  })
  const events: StreamEvent[] = []
  let comments = 0
  let raw = ''
  let pending = ''
  let current: StreamEvent = { event: '', data: '', id: '' }
  let dataLines: string[] = []
  let lastId = ''
  const waiters = new Set<() => void>()
  response.setEncoding('utf8')
  response.on('data', (chunk: string) => {
    raw += chunk
    pending += chunk
    const lines = pending.split(/\r\n|\r|\n/)
    pending = lines.pop() ?? ''
    for (const line of lines) {
      if (line === '') {
        if (dataLines.length > 0) {
          events.push({ ...current, data: dataLines.join('\n'), id: lastId, event: current.event === '' ? 'message' : current.event })
        }
        current = { event: '', data: '', id: '' }
        dataLines = []
      } else if (line.startsWith(':')) {
        comments++
      } else {
        const colon = line.indexOf(':')
        const field = colon === -1 ? line : line.slice(0, colon)
        let value = colon === -1 ? '' : line.slice(colon + 1)
        if (value.startsWith(' ')) value = value.slice(1)
        if (field === 'data') dataLines.push(value)
        else if (field === 'event') current.event = value
        else if (field === 'id' && !value.includes('\0')) lastId = value
      }
    }
    for (const wake of waiters) wake()
  })
  const ended = new Promise<boolean>(resolve => {
    response.once('end', () => resolve(true))
    response.once('error', () => resolve(false))
    response.once('close', () => resolve(response.complete))
  })
  void ended.then(() => { for (const wake of waiters) wake() })
  let done = false
  void ended.then(() => { done = true })

  const stream: EventStream = {
    status: response.statusCode ?? 0,
    headers: response.headers,
    events,
    get comments () { return comments },
    body: () => raw,
    ended,
    response,
    async waitForEvents (count: number, ms = 2000) {
      if (events.length >= count) return events.slice(0, count)
      return await new Promise<StreamEvent[]>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`${events.length} of ${count} events within ${ms} ms; body so far: ${JSON.stringify(raw)}`))
        }, ms)
        function check (): void {
          if (events.length >= count || done) {
            clearTimeout(timer)
            waiters.delete(check)
            if (events.length >= count) resolve(events.slice(0, count))
            else reject(new Error(`the response ended after ${events.length} of ${count} events; body: ${JSON.stringify(raw)}`))
          }
        }
        waiters.add(check)
      })
    },
    close () { response.destroy() }
  }
  return stream
}
