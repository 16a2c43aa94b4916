// Consumer routes are `{ websocket: true }` routes, an option that `@fastify/websocket`'s types add to
// Fastify's. The plugin registers it, so the app may never import it: the reference makes its
// augmentation part of these declarations.
/// <reference types="@fastify/websocket" preserve="true" />
export { fastifyChannels, fastifyChannels as default } from './plugin.js'
export type { FastifyChannelsOptions } from './plugin.js'
export { WebsocketConsumer } from './consumer.js'
export type { WebsocketRouteHandler, ConsumerClass } from './consumer.js'
export { JsonWebsocketConsumer } from './json-consumer.js'
export { GroupsConsumer } from './groups/consumer.js'
export type { GroupsConsumerClass } from './groups/consumer.js'
export type { ApiOf, ActionSpec, ActionTable } from './groups/actions.js'
export type {
  ApiShape, CallId, ClientToServer, ServerToClient, JoinFrame, LeaveFrame, CallFrame,
  JoinedFrame, MessageFrame, PresenceFrame, ReplyFrame, ErrorFrame, ErrorBody
} from './protocol.js'
export { AsyncHttpConsumer } from './http-consumer.js'
export type { HttpRouteHandler, HttpConsumerClass, SendHeadersOptions, SendBodyOptions, ServerSentEvent } from './http-consumer.js'
export { ChannelConsumer } from './worker.js'
export type { ChannelConsumerClass } from './worker.js'
export type { Scope, HttpScope, ScopeSession, SessionLike, ChannelsUser, GetUser } from './scope.js'
export { login, logout } from './auth.js'
export { BaseChannelLayer } from './layers/base.js'
export { InMemoryChannelLayer } from './layers/in-memory.js'
export { RedisChannelLayer } from './layers/redis.js'
export type { RedisChannelLayerOptions, RedisLayerStats, RedisLayerInspection } from './layers/redis.js'
export type { BaseChannelLayerOptions, LayerStats, LayerInspection } from './layers/base.js'
export type {
  ChannelLayer, LayerMessage, LayerValue, ReceiveOptions, LayerLogger, ChannelSink, ChannelListener, ChannelListening, LoggerAttaching,
  StreamPosition, Delivery, GroupJoin, PresenceInfo, GroupPolicy, GroupAddOptions, HistoryOptions, GroupHistory, PresenceEntry,
  Received, DeliveryReceiving
} from './layers/types.js'
export {
  ChannelFullError, InvalidChannelNameError, InvalidMessageError,
  LayerClosedError, LayerTimeoutError, RemoteLayerError, InvalidOptionError,
  TooManyGroupsError, SessionRequiredError, SessionGoneError, RedisPipelineError, ConnectionClosedError,
  HttpResponseError, InvalidEventError,
  BadFrameError, UnknownOpError, JoinDeniedError, JoinFailedError, UnknownActionError, InvalidArgsError,
  ArgsTooLargeError, ActionFailedError
} from './errors.js'
export type { SpawnedTask } from './connection/scoped-tasks.js'
