/**
 * What the cluster protocol (../cluster.ts) needs from a backend: publish/subscribe on a few
 * routes, membership records with a lease, and shared queues for named channels. Everything a
 * backend does is one of these; everything processes say to each other is the protocol's.
 */
import type { LocalStore } from '../local-store.js'
import type { LayerLogger, LayerMessage } from '../types.js'

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
  push (channel: string, message: LayerMessage, what: string): Promise<boolean>
  /** The next message, taken by exactly one receiver of all processes. */
  receive (channel: string, signal: AbortSignal | undefined): Promise<LayerMessage>
  addMember (group: string, channel: string): Promise<void>
  removeMember (group: string, channel: string): Promise<void>
  /** Empties the queue and leaves every group. */
  discard (channel: string): Promise<void>
  /** A group message for the group's named members: each gets it unless its queue is full (reported). */
  fill (group: string, members: readonly string[], message: LayerMessage, what: string): Promise<void>
  close (): void
}

/** What the cluster protocol gives the backend it runs on. */
export interface ClusterContext {
  readonly processToken: string
  /** This process' channels and groups. */
  readonly store: LocalStore
  readonly capacity: number
  readonly expiryMs: number
  readonly groupExpiryMs: number
  /** The layer's logger now (the plugin may attach one after construction). */
  log (): LayerLogger
  /** A group member was skipped because its queue was full. */
  skipped (group: string, channel: string): void
  /** A payload arrived on a route this process subscribed to. */
  received (route: Route, payload: Buffer): void
  /** `up` may have changed. */
  stateChanged (): void
}

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
   * (who must get the message in their queues).
   */
  publishToGroup (group: string, payload: Buffer, what: string): Promise<string[]>
  /** Records (or renews) memberships of this process' channels for `ttlMs` each. */
  recordMembers (group: string, members: ReadonlyArray<readonly [channel: string, ttlMs: number]>, what: string): Promise<void>
  /** Removes membership records; with `notice`, publishes it on the group's route in the same round trip. */
  removeMembers (group: string, channels: readonly string[], what: string, notice?: Buffer): Promise<void>
  /** Deletes everything the layer keeps in the backend (its own prefix only). */
  deleteAll (what: string): Promise<void>
  close (): void
}
