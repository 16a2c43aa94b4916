/**
 * What the cluster protocol (../cluster.ts) needs from a backend: publish/subscribe on a few
 * routes, membership records with a lease, and shared queues for named channels. Everything a
 * backend does is one of these; everything processes say to each other is the protocol's.
 */
import type { LocalStore } from '../local-store.js'
import type { WireCodec } from '../codec.js'
import type { Delivery, LayerLogger, LayerMessage, Received, StreamPosition } from '../types.js'
import { idleMsOf, type HistoryPolicy } from '../history.js'

/** Where a payload is published, and where an incoming one came from. */
export type Route =
  | { readonly kind: 'group', readonly group: string }
  /** A process' inbox: direct messages, requests and replies for the process with this token. */
  | { readonly kind: 'process', readonly token: string }
  /** Every process sharing the layer. */
  | { readonly kind: 'broadcast' }

/** Named channels (no `!`): queues in the backend that belong to no process. */
export interface SharedQueues {
  /** Queues being read for waiting receivers of this process: for leak checks. */
  readonly readers: number
  /** Appends to the queue; false when it holds `capacity` messages already. */
  push (channel: string, message: LayerMessage, what: string, info?: Delivery): Promise<boolean>
  /** The next message, taken by exactly one receiver of all processes. */
  receive (channel: string, signal: AbortSignal | undefined): Promise<Received>
  addMember (group: string, channel: string): Promise<void>
  removeMember (group: string, channel: string): Promise<void>
  /** Empties the queue and leaves every group. */
  discard (channel: string): Promise<void>
  /** A group message for the group's named members: each gets it unless its queue is full (reported). */
  fill (group: string, members: readonly string[], message: LayerMessage, what: string, info: Delivery): Promise<void>
  /** Resolves once no message taken from a queue can be lost any more (given back, if popped); the connections may then close. */
  close (): Promise<void>
}

/** What the cluster protocol gives the backend it runs on. */
export interface ClusterContext {
  readonly processToken: string
  /** This process' channels and groups. */
  readonly store: LocalStore
  /** How payloads are written (sealed when the layer encrypts). */
  readonly codec: WireCodec
  readonly capacity: number
  readonly expiryMs: number
  readonly groupExpiryMs: number
  /** The layer's logger now (the plugin may attach one after construction). */
  log (): LayerLogger
  /** A group member was skipped because its queue was full. */
  skipped (group: string, channel: string): void
  /** Messages of a named channel that expired unreceived and were dropped by this process. */
  expired (count: number): void
  /** A payload arrived on a route this process subscribed to. */
  received (route: Route, payload: Buffer): void
  /** `up` may have changed. */
  stateChanged (): void
  /**
   * A part of the backend went away while it stays up as a whole (one master of a Redis Cluster):
   * what this process recorded there may come back lost, so its records are written again.
   */
  partLost (): void
}

/** What a group with history keeps: `idleMs` is how long its position outlives its last use. */
export interface HistoryKeeping {
  size: number
  ttlMs: number
  idleMs: number
}

/** What the backend is told of a group's history policy. */
export function keepingOf (history: HistoryPolicy, groupExpiryMs: number): HistoryKeeping {
  return { size: history.size, ttlMs: history.ttlMs, idleMs: idleMsOf(history, groupExpiryMs) }
}

/** A membership that records presence or joins a group with history, in one step. */
export interface JoinRecord {
  channel: string
  leaseMs: number
  /** The presence info, encoded. */
  presence?: Buffer
  history?: HistoryKeeping & { since?: StreamPosition }
}

/** A stored group payload and its offset. */
export type StoredPayload = readonly [offset: number, payload: Buffer]

export interface JoinResult {
  /** What the membership recorded as presence before (encoded), if anything. */
  previousPresence: Buffer | null
  /** The group's latest position (null without history). */
  position: StreamPosition | null
  /** What was published after `since`, when `since` is in the current epoch: oldest first. */
  missed: StoredPayload[]
}

/**
 * When the backend wrote a group message (its clock, in ms): published with the message, and kept
 * with it. Two writes of one offset in one epoch have different stamps, so a process can tell that
 * the message at an offset it heard was written again (the backend lost its last writes).
 */
export type GroupStamp = number

export interface HistoryRead {
  position: StreamPosition
  stored: StoredPayload[]
  /** The stamp of the message at `since`, when `since` is in this epoch and the message is kept. */
  stampAtSince?: GroupStamp
  /** `since` was in the epoch the group had before its last renewal, and read as in this one. */
  followedRenewal?: true
}

/** A presence entry with its info encoded. */
export type StoredPresence = readonly [channel: string, info: Buffer]

export interface Transport {
  /** Milliseconds any call may wait for an unreachable backend before it rejects. */
  readonly timeout: number
  /** True while connected with every subscription confirmed. */
  readonly up: boolean
  /** Routes subscribed: for leak checks. */
  readonly subscriptions: number
  readonly queues: SharedQueues
  /** Resolves once the backend confirmed the subscription (or it was dropped meanwhile). */
  subscribe (route: Route): Promise<void>
  unsubscribe (route: Route): void
  /** Resolves with how many processes received it. */
  publish (route: Route, payload: Buffer, what: string): Promise<number>
  /**
   * Publishes a group message and, in the same round trip, reads the group's live named members
   * (who must get the message in their queues). With `history`, the message takes the group's
   * next offset and is kept; the payload is published with its position appended (see codec.ts).
   */
  publishToGroup (group: string, payload: Buffer, what: string, history?: HistoryKeeping): Promise<{ named: string[], position?: StreamPosition }>
  /**
   * Records (or renews) memberships of this process' channels for `ttlMs` each. `presence` holds
   * the entries those memberships recorded: one the backend no longer has (it lost its data, or a
   * process took this one for dead) is written again; resolves with the entries written again.
   */
  recordMembers (group: string, members: ReadonlyArray<readonly [channel: string, ttlMs: number]>, what: string,
    presence?: readonly StoredPresence[]): Promise<StoredPresence[]>
  /** Records a membership with presence or history, reading what a returning member missed. */
  join (group: string, record: JoinRecord, what: string): Promise<JoinResult>
  /**
   * Removes membership records and their presence entries, returning those; with `notice`,
   * publishes it on the group's route in the same round trip.
   */
  removeMembers (group: string, channels: readonly string[], what: string, notice?: Buffer): Promise<StoredPresence[]>
  /**
   * The kept payloads: after `since` (oldest first) when it is in this epoch, else the latest
   * `limit`; and when the one at `since` was written, if it is kept (see `GroupStamp`).
   */
  readHistory (group: string, history: HistoryKeeping, since: StreamPosition | undefined, limit: number, what: string, followRenewal?: boolean):
  Promise<HistoryRead>
  /**
   * The group's offsets went back in epoch `seen` (the backend lost its last writes): it gets a new
   * epoch, unless it has one already, so that positions in `seen` are recovered no more.
   */
  renewEpoch (group: string, seen: string, what: string): Promise<void>
  /** The live presence entries of the group, across processes. */
  presence (group: string, what: string): Promise<StoredPresence[]>
  /**
   * Removes presence entries whose membership ended without a word; each comes back to one caller
   * only. Called every `periodMs` by each process with members in the group: one call in a period
   * does the work, the others may return none at once.
   */
  reapPresence (group: string, periodMs: number, what: string): Promise<StoredPresence[]>
  /** Deletes everything the layer keeps in the backend (its own prefix only). */
  deleteAll (what: string): Promise<void>
  close (): Promise<void>
}
