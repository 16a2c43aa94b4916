/**
 * The client's one error class. It carries a stable `code`: the server's (FST_CHANNELS_JOIN_DENIED,
 * FST_CHANNELS_INVALID_ARGS, an app's own…) or one of the client's below. The client has no runtime
 * dependency, so this is a plain subclass of Error rather than @fastify/error's.
 */
export class ChannelsClientError extends Error {
  readonly code: string

  constructor (code: string, message: string) {
    super(message)
    this.name = 'ChannelsClientError'
    this.code = code
  }
}

/** Codes the client itself gives. */
export const CALL_TIMEOUT = 'FST_CHANNELS_CALL_TIMEOUT'
export const CONNECTION_LOST = 'FST_CHANNELS_CONNECTION_LOST'
export const CLIENT_CLOSED = 'FST_CHANNELS_CLIENT_CLOSED'
export const ALREADY_JOINED = 'FST_CHANNELS_ALREADY_JOINED'
export const LEFT = 'FST_CHANNELS_LEFT'
export const INVALID_OPTION = 'FST_CHANNELS_INVALID_OPTION'
export const INVALID_NAME = 'FST_CHANNELS_INVALID_NAME'
export const INVALID_ARGS = 'FST_CHANNELS_INVALID_ARGS'
export const BAD_FRAME = 'FST_CHANNELS_BAD_FRAME'
