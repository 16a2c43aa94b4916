/**
 * The channel layer contract (Channels' layer spec): what consumers, workers and app code rely on.
 * Layers built on BaseChannelLayer satisfy it; any other object with these methods may be used too.
 */

/** Values that may travel inside a message. */
export type LayerValue =
  | string | number | boolean | null | Uint8Array
  | LayerValue[] | { [key: string]: LayerValue }

/** A plain object whose `type` chooses the handler (`'chat.message'` → `chatMessage()`). */
export interface LayerMessage {
  type: string
  [key: string]: unknown
}

export interface ReceiveOptions {
  /** Aborting it rejects the pending `receive()` with the signal's reason; no message is consumed. */
  signal?: AbortSignal
}

export interface ChannelLayer {
  readonly extensions: readonly string[]
  newChannel (prefix?: string): Promise<string>
  send (channel: string, message: LayerMessage): Promise<void>
  receive (channel: string, options?: ReceiveOptions): Promise<LayerMessage>
  groupAdd (group: string, channel: string): Promise<void>
  groupDiscard (group: string, channel: string): Promise<void>
  groupSend (group: string, message: LayerMessage): Promise<void>
  flush (): Promise<void>
  close (): Promise<void>
  group_add: ChannelLayer['groupAdd']
  group_discard: ChannelLayer['groupDiscard']
  group_send: ChannelLayer['groupSend']
  new_channel: ChannelLayer['newChannel']
}

/** Minimal logger a layer writes to (pino's and Fastify's loggers fit). */
export interface LayerLogger {
  warn (obj: object, msg?: string): void
  debug (obj: object, msg?: string): void
  error (obj: object, msg?: string): void
}

/**
 * Extra lifecycle a layer may offer. When present, a consumer that ends frees its channel and
 * every membership made with it in one call (also memberships added by other code).
 */
export interface ChannelDiscarding {
  discardChannel (channel: string): Promise<void>
}

export function canDiscardChannel (layer: ChannelLayer): layer is ChannelLayer & ChannelDiscarding {
  return typeof (layer as Partial<ChannelDiscarding>).discardChannel === 'function'
}

/**
 * Where a listened channel's messages go as they arrive, instead of waiting for `receive()`.
 * A connection listens on its own channel, so a group message reaches every local member in the
 * `groupSend()` call itself, with no promise per member.
 */
export interface ChannelSink {
  /** Whether the sink takes a message now. While false, messages wait in the channel (capacity and expiry apply) until `resume()`. */
  readonly accepting: boolean
  /** Takes one message, a copy the sink owns. */
  push (message: LayerMessage): void
  /** The layer closed: no message will come any more. */
  layerClosed (reason: Error): void
}

export interface ChannelListener {
  /** The sink accepts again: hands it what waited in the channel meanwhile, in order. */
  resume (): void
  /** Stops listening; later messages wait in the channel for `receive()`. */
  close (): void
}

/** Extra delivery mode a layer may offer; without it a connection loops on `receive()`. */
export interface ChannelListening {
  listen (channel: string, sink: ChannelSink): ChannelListener
}

export function canListen (layer: ChannelLayer): layer is ChannelLayer & ChannelListening {
  return typeof (layer as Partial<ChannelListening>).listen === 'function'
}

/**
 * Extra a layer may offer: logging through the app's logger. The plugin calls it once at
 * register; a logger the layer was given explicitly takes precedence.
 */
export interface LoggerAttaching {
  attachLogger (log: LayerLogger): void
}

export function canAttachLogger (layer: ChannelLayer): layer is ChannelLayer & LoggerAttaching {
  return typeof (layer as Partial<LoggerAttaching>).attachLogger === 'function'
}
