/**
 * What a `ChannelsClient` is given, and how each is checked: the URL (made a ws:// or wss:// one),
 * the WebSocket class, and durations in milliseconds. A bad one throws ChannelsClientError
 * `FST_CHANNELS_INVALID_OPTION` from the constructor (or from `call()`, for its own timeout).
 */
import { ChannelsClientError, INVALID_OPTION } from './errors.js'

/** A WebSocket class with the browser's API: the global one, or `ws`'s default export in Node 20. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => object

export interface ClientOptions {
  /** Default: the global WebSocket (browsers, Node >= 22). */
  WebSocket?: WebSocketConstructor | undefined
  protocols?: string | string[] | undefined
  /** Milliseconds a call waits for its reply (default 10000). */
  callTimeout?: number | undefined
  /** Backoff bounds in milliseconds (default 500 and 30000). */
  minDelay?: number | undefined
  maxDelay?: number | undefined
  /** Milliseconds a socket may take to open before it is given up (default 10000). */
  connectTimeout?: number | undefined
  /**
   * Milliseconds a socket may stay silent before the client asks the server (a `ping`); silent a
   * heartbeat more, it is given up and the client reconnects (default 25000).
   */
  heartbeat?: number | undefined
}

export interface CallOptions {
  /** Milliseconds to wait for the reply; default: the client's `callTimeout`. */
  timeout?: number | undefined
}

/** `call(action, args?, options?)`: `args` may be left out when the action takes none. */
export type CallArgs<A> = undefined extends A ? [args?: A, options?: CallOptions] : [args: A, options?: CallOptions]

/** What the client uses of the page (or of Node's global scope), where there is one. */
export const host = globalThis as unknown as {
  WebSocket?: WebSocketConstructor
  location?: { href: string }
  navigator?: { onLine?: boolean }
  addEventListener?: (type: string, listener: (event: Event) => void) => void
  removeEventListener?: (type: string, listener: (event: Event) => void) => void
}

// The longest wait a timer takes: a longer one fires at once.
const MAX_TIMER_MS = 2 ** 31 - 1

/** A duration option: `fallback` when unset, else a positive number a timer can wait. */
export function milliseconds (value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !(value > 0) || !(value <= MAX_TIMER_MS)) {
    throw new ChannelsClientError(INVALID_OPTION, `${name} must be a positive number of milliseconds, at most ${MAX_TIMER_MS}`)
  }
  return value
}

/** The WebSocket class given, or the global one. */
export function webSocketClass (options: ClientOptions): WebSocketConstructor {
  const WebSocket = options.WebSocket ?? host.WebSocket
  if (typeof WebSocket !== 'function') {
    throw new ChannelsClientError(INVALID_OPTION, 'no WebSocket here: pass { WebSocket } (in Node 20, the ws package\'s)')
  }
  return WebSocket
}

/** ws:// or wss://, from a relative path (in a browser), http(s):// or ws(s)://. */
export function socketUrl (url: string): string {
  let parsed: URL
  try {
    parsed = new URL(url, host.location?.href)
  } catch {
    throw new ChannelsClientError(INVALID_OPTION, `${JSON.stringify(url)} is not a URL (outside a browser, give ws://host/path)`)
  }
  if (parsed.protocol === 'http:' || parsed.protocol === 'https:') parsed.protocol = parsed.protocol === 'http:' ? 'ws:' : 'wss:'
  if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
    throw new ChannelsClientError(INVALID_OPTION, `${JSON.stringify(url)}: expected a ws:, wss:, http: or https: URL`)
  }
  return parsed.href
}
