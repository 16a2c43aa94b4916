/**
 * The channel layer contract (Channels' layer spec): what consumers, workers and app code rely on.
 * Layers built on BaseChannelLayer satisfy it; any other object with these methods may be used too.
 */

/**
 * Values that may travel inside a message: what every layer can copy and encode. `undefined`, a
 * `Date`, a class instance or a function is refused by the compiler here, not at run time. A
 * value declared with an `interface` has no index signature, so it is refused too when nested:
 * spread it (`{ ...profile }`) or declare it with `type`.
 */
export type LayerValue =
  | string | number | boolean | null | Uint8Array
  | readonly LayerValue[] | { readonly [key: string]: LayerValue }

/** A plain object whose `type` chooses the handler (`'chat.message'` → `chatMessage()`). */
export interface LayerMessage {
  type: string
  [key: string]: LayerValue
}

export interface ReceiveOptions {
  /** Aborting it rejects the pending `receive()` with the signal's reason; no message is consumed. */
  signal?: AbortSignal | undefined
}

/**
 * Where a message stands in a group's history: `offset` counts the group's messages (1, 2, 3…,
 * one sequence across all processes) within an `epoch`, an opaque string that changes whenever
 * the group's history is lost.
 */
export interface StreamPosition {
  offset: number
  epoch: string
}

/**
 * How a message reached a handler, its second argument: `group` for every group message,
 * `offset` and `epoch` when the group keeps history. Empty for a message sent to the channel.
 */
export interface Delivery {
  readonly group?: string
  readonly offset?: number
  readonly epoch?: string
}

/** What a membership records about its member, for `presence()`: plain layer values, at most 1 KiB encoded. */
export type PresenceInfo = { [key: string]: LayerValue }

export interface GroupAddOptions {
  /** The last position the member saw: what came after it is delivered first (a group with history). */
  since?: StreamPosition | undefined
  /** Records this membership's presence, listed by `presence()` for as long as it lasts. */
  presence?: PresenceInfo | undefined
}

export interface GroupJoin {
  /** The group's latest position when the join took effect; null for a group without history. */
  position: StreamPosition | null
  /** Every message after `since` was delivered (or none was missed); false: resynchronise. */
  recovered: boolean
}

export interface HistoryOptions {
  /** Only the messages after this position (when its epoch is the group's current one). */
  since?: StreamPosition | undefined
  /** At most this many: the oldest ones after `since`, or else the latest ones. */
  limit?: number | undefined
}

export interface GroupHistory {
  /** Oldest first. */
  messages: Array<{ message: LayerMessage, offset: number }>
  /** The group's latest position; null for a group without history. */
  position: StreamPosition | null
}

export interface PresenceEntry {
  channel: string
  info: PresenceInfo
}

/** A group's policy, chosen by the layer's `groups` option. */
export interface GroupPolicy {
  /** Keep the last `size` messages (1–100,000) for `ttl` seconds, with offsets. */
  history?: { size: number, ttl: number } | undefined
  /** Announce presence entries added and removed as `presence.join` / `presence.leave` messages. */
  presenceEvents?: boolean | undefined
}

export interface ChannelLayer {
  readonly extensions: readonly string[]
  newChannel (prefix?: string): Promise<string>
  send (channel: string, message: LayerMessage): Promise<void>
  receive (channel: string, options?: ReceiveOptions): Promise<LayerMessage>
  groupAdd (group: string, channel: string, options?: GroupAddOptions): Promise<GroupJoin>
  groupDiscard (group: string, channel: string): Promise<void>
  /** Resolves with the message's position in a group with history, else undefined. */
  groupSend (group: string, message: LayerMessage): Promise<StreamPosition | undefined>
  /** The group's retained messages; empty with a null position for a group without history. */
  history (group: string, options?: HistoryOptions): Promise<GroupHistory>
  /** The presence entries of the group's members, across all processes. */
  presence (group: string): Promise<PresenceEntry[]>
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
  /**
   * Whether the sink takes a group's message shared with the other members that do, deep-frozen
   * (its consumer opted in with `static sharedMessages = true`), instead of a copy of its own.
   */
  readonly sharesMessages?: boolean
  /**
   * Whether replayed messages (a recovering member's catch-up, `force`d past capacity), and what
   * waited in the channel when the sink resumes, wait in the channel, even while the sink accepts,
   * until `resume()`: its client has not read what it was sent.
   */
  readonly congested?: boolean
  /**
   * The channel kept a message back (the sink did not accept it, or older ones wait): whatever
   * else the sink takes from (a client's frames, which wait losslessly in TCP) should mostly wait
   * until what waits in the channel has been handed over, or the channel fills and skips messages.
   */
  behind? (): void
  /** Takes one message, a copy the sink owns, and how it came (shared by a group's members: read-only). */
  push (message: LayerMessage, info: Delivery): void
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

/** Extra a layer may offer: how long each of its operations takes (what the plugin's metrics report). */
export interface OpTiming {
  timeOperations (observe: ((op: string, seconds: number) => void) | undefined): void
}

export function canTimeOperations (layer: ChannelLayer): layer is ChannelLayer & OpTiming {
  return typeof (layer as Partial<OpTiming>).timeOperations === 'function'
}

/** A message as a receiver gets it, with how it came. */
export interface Received {
  message: LayerMessage
  info: Delivery
}

/** Extra a layer may offer: `receive()` with the message's `Delivery` (workers pass it to handlers). */
export interface DeliveryReceiving {
  receiveDelivery (channel: string, options?: ReceiveOptions): Promise<Received>
}

export function canReceiveDelivery (layer: ChannelLayer): layer is ChannelLayer & DeliveryReceiving {
  return typeof (layer as Partial<DeliveryReceiving>).receiveDelivery === 'function'
}
