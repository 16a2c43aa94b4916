/**
 * `fastify-channels/client`: the browser and Node (>= 20) client of GroupsConsumer. No runtime
 * dependency; nothing here imports the server's modules (types aside).
 */
export { ChannelsClient } from './client.js'
export type { ClientState, StateDetail } from './client.js'
export type { ClientOptions, CallOptions, CallArgs, WebSocketConstructor } from './options.js'
export type { Subscription, SubscriptionHandlers, MessageInfo } from './subscription.js'
export { ChannelsClientError } from './errors.js'
export type { ApiShape } from '../protocol.js'
export type { GroupJoin, PresenceEntry, PresenceInfo, StreamPosition } from '../layers/types.js'
