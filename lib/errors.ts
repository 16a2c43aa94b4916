import createError, { type FastifyErrorConstructor } from '@fastify/error'

// Every error the product throws carries a stable `code` (FST_CHANNELS_*) that callers can test for.

// The type of each class, named through a type import: written as `createError.…` (what inferring
// it gives), the declarations shipped would compile only under `moduleResolution: node16/nodenext`,
// not for an app on `bundler` or `commonjs` (its `import createError` is then not the namespace).
type ErrorClass<Code extends string, Args extends unknown[]> = FastifyErrorConstructor<{ code: Code }, Args>

function defineError<Code extends string, Args extends unknown[]> (code: Code, message: string, statusCode?: number, Base?: ErrorConstructor): ErrorClass<Code, Args> {
  return createError<Code, Args>(code, message, statusCode, Base)
}

/** A message was sent to a channel that already holds `capacity` undelivered messages. */
export const ChannelFullError = defineError<'FST_CHANNELS_CHANNEL_FULL', [string]>(
  'FST_CHANNELS_CHANNEL_FULL', 'Channel "%s" is full')

/** A channel or group name does not follow the channel layer naming rules. */
export const InvalidChannelNameError = defineError<'FST_CHANNELS_INVALID_NAME', [string]>(
  'FST_CHANNELS_INVALID_NAME', '%s', 500, TypeError)

/** A message is not a plain object with a string `type`, or holds a value that cannot cross a layer. */
export const InvalidMessageError = defineError<'FST_CHANNELS_INVALID_MESSAGE', [string]>(
  'FST_CHANNELS_INVALID_MESSAGE', '%s', 500, TypeError)

/** The layer was closed; no further operation is possible. */
export const LayerClosedError = defineError<'FST_CHANNELS_LAYER_CLOSED', []>(
  'FST_CHANNELS_LAYER_CLOSED', 'The channel layer is closed')

/**
 * A layer's backend did not answer within the layer's `timeout`, or said sooner that it cannot
 * (Redis unreachable, a Redis Cluster down): an outage, worth trying again.
 */
export const LayerTimeoutError = defineError<'FST_CHANNELS_LAYER_TIMEOUT', [string, number]>(
  'FST_CHANNELS_LAYER_TIMEOUT', 'Channel layer backend unavailable for %s (timeout %d ms)')

/** A plugin, layer or consumer option has a bad value. */
export const InvalidOptionError = defineError<'FST_CHANNELS_INVALID_OPTION', [string]>(
  'FST_CHANNELS_INVALID_OPTION', '%s', 500, TypeError)

/** A consumer tried to join more groups than the plugin's `maxGroupsPerConnection` allows. */
export const TooManyGroupsError = defineError<'FST_CHANNELS_TOO_MANY_GROUPS', [string, number]>(
  'FST_CHANNELS_TOO_MANY_GROUPS', 'Channel "%s" may join at most %d groups', 500, RangeError)

/** `login()` or `logout()` was called on a scope without a session (`@fastify/session` is not registered). */
export const SessionRequiredError = defineError<'FST_CHANNELS_SESSION_REQUIRED', [string]>(
  'FST_CHANNELS_SESSION_REQUIRED', '%s() needs scope.session: register @fastify/cookie and @fastify/session before the consumer route')

/**
 * The process that owns a channel (only it can add the channel to a group or discard it) answered
 * a request with a failure. `remoteCode` is the code of the error it met there.
 */
export const RemoteLayerError = defineError<'FST_CHANNELS_REMOTE_FAILED', [string, string, string]>(
  'FST_CHANNELS_REMOTE_FAILED', 'The process that owns channel "%s" could not %s: %s')

/** Redis discarded a pipeline of the Redis layer (a transaction aborted under it). */
export const RedisPipelineError = defineError<'FST_CHANNELS_REDIS_PIPELINE', []>(
  'FST_CHANNELS_REDIS_PIPELINE', 'Redis discarded a pipeline of the channel layer')

// GroupsConsumer's protocol: what a client is answered with, in an `error` frame or an error reply.

/** A protocol frame the server cannot read: not a JSON object, a missing or mistyped field, a binary frame. */
export const BadFrameError = defineError<'FST_CHANNELS_BAD_FRAME', [string]>(
  'FST_CHANNELS_BAD_FRAME', '%s', 400)

/** A protocol frame with an `op` the server does not know. */
export const UnknownOpError = defineError<'FST_CHANNELS_UNKNOWN_OP', [string]>(
  'FST_CHANNELS_UNKNOWN_OP', 'Unknown op %s: expected "join", "leave" or "call"', 400)

/** The consumer's `canJoin()` refused a group. */
export const JoinDeniedError = defineError<'FST_CHANNELS_JOIN_DENIED', [string]>(
  'FST_CHANNELS_JOIN_DENIED', 'Joining group "%s" was refused', 403)

/** `canJoin()` or `presenceInfo()` threw: the join did not happen (the error is logged, not sent). */
export const JoinFailedError = defineError<'FST_CHANNELS_JOIN_FAILED', [string]>(
  'FST_CHANNELS_JOIN_FAILED', 'Joining group "%s" failed', 500)

/** A call named an action the consumer's `static actions` does not list. */
export const UnknownActionError = defineError<'FST_CHANNELS_UNKNOWN_ACTION', [string]>(
  'FST_CHANNELS_UNKNOWN_ACTION', 'Unknown action %s', 404)

/** A call's arguments failed the action's schema. */
export const InvalidArgsError = defineError<'FST_CHANNELS_INVALID_ARGS', [string, string]>(
  'FST_CHANNELS_INVALID_ARGS', 'Invalid arguments for "%s": %s', 400)

/** A call frame larger than the consumer's `maxArgsBytes`. */
export const ArgsTooLargeError = defineError<'FST_CHANNELS_ARGS_TOO_LARGE', [number, number]>(
  'FST_CHANNELS_ARGS_TOO_LARGE', 'The call is %d bytes; at most %d are accepted', 413)

/** An action threw an error not meant for the client (no 4xx `statusCode`); it is logged, not sent. */
export const ActionFailedError = defineError<'FST_CHANNELS_ACTION_FAILED', [string]>(
  'FST_CHANNELS_ACTION_FAILED', 'Action "%s" failed', 500)
/**
 * The connection (or HTTP response) has ended: `send()`, `sendBody()`, `sendEvent()` or `spawn()`
 * came too late, and `this.signal` is aborted with it as the reason. A loop that sends ends here.
 */
export const ConnectionClosedError = defineError<'FST_CHANNELS_CONNECTION_CLOSED', [string, string]>(
  'FST_CHANNELS_CONNECTION_CLOSED', 'Connection "%s" has ended: %s')

/**
 * An `AsyncHttpConsumer` used its response out of order: `sendHeaders()` after the response had
 * started, or `handle()` returned without starting one.
 */
export const HttpResponseError = defineError<'FST_CHANNELS_HTTP_RESPONSE', [string]>(
  'FST_CHANNELS_HTTP_RESPONSE', '%s')

/** A server-sent event that cannot be written as it is: a line break in `event` or `id` would forge fields. */
export const InvalidEventError = defineError<'FST_CHANNELS_INVALID_EVENT', [string]>(
  'FST_CHANNELS_INVALID_EVENT', '%s', 500, TypeError)
