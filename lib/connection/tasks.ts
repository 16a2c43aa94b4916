/**
 * A connection's tasks and how each reaches its consumer: a client frame goes to `receive()`, a
 * layer message to the handler its `type` names (dispatch.ts), and the End of the connection to
 * the lifecycle (connection.ts). Also what a failing handler costs its connection.
 */
import type { FastifyBaseLogger } from 'fastify'
import { inspect } from 'node:util'
import type { RawData } from 'ws'
import type { Delivery, LayerMessage } from '../layers/types.js'
import { DIRECT, SKIPPED } from '../layers/local-channels.js'
import { findHandler, isPresenceEvent, missingHandlerHint } from '../dispatch.js'
import { InvalidOptionError, TooManyGroupsError } from '../errors.js'
import { toBuffer } from './socket.js'

// The hooks are symbols: a WebSocket consumer maps them onto `connect()`, `receive()` and
// `disconnect(code)`, an HTTP consumer onto `handle()` and `disconnect()`, and neither class shows
// the other's names.
export const kConnect = Symbol('fastify-channels.connect')
export const kReceive = Symbol('fastify-channels.receive')
export const kDisconnect = Symbol('fastify-channels.disconnect')
/**
 * Optional: group messages up to `info` were skipped for this channel (it was full); a consumer
 * that keeps its client whole (GroupsConsumer) fetches them from the group's history.
 */
export const kSkipped = Symbol('fastify-channels.skipped')
/**
 * Optional: a client text frame the consumer answers at once, ahead of what is queued (a
 * GroupsConsumer's `ping`, so that a long action does not make a live connection look dead).
 * True when the consumer took it; false queues it as any other frame.
 */
export const kAtOnce = Symbol('fastify-channels.atOnce')
/**
 * Optional: whether a client text frame is exempt from the rate limit (a GroupsConsumer's client
 * joins all its groups at once as it connects; the consumer bounds how many).
 */
export const kUnmetered = Symbol('fastify-channels.unmetered')
/**
 * Optional: the connection is not reading the client's frames (the consumer is behind), at once
 * and every half second while that lasts: a consumer whose client gives up a silent socket says it is
 * there (GroupsConsumer: a `pong`), since the client's `ping` waits unread.
 */
export const kStillHere = Symbol('fastify-channels.stillHere')

/** The part of a consumer the connection drives; layer messages go to its handlers by `type`. */
export interface ConsumerHooks {
  groups: string[]
  /** Runs first; whatever arrives meanwhile waits for it. */
  [kConnect] (): unknown
  /** A client frame. */
  [kReceive] (text: string | undefined, bytes: Buffer | undefined): unknown
  /** Once, at the end. */
  [kDisconnect] (code: number): unknown
  [kSkipped]?: (info: Delivery) => unknown
  [kAtOnce]?: (text: Buffer) => boolean
  [kUnmetered]?: (text: Buffer) => boolean
  [kStillHere]?: () => void
}

/**
 * The consumer's `groups`, checked as the connection is set up: an array of names (a string would
 * be joined letter by letter; the layer checks each name).
 */
export function groupsOf (consumer: ConsumerHooks): readonly string[] {
  const { groups } = consumer as { groups: unknown }
  if (!Array.isArray(groups)) {
    throw new InvalidOptionError(`${consumer.constructor.name}.groups must be an array of group names, got ${groups === null ? 'null' : typeof groups}`)
  }
  return groups as string[]
}

/** A client frame waiting for `receive()`. */
export class ClientFrame {
  constructor (readonly data: RawData, readonly binary: boolean) {}
}

/** The connection ended: `disconnect(code)` and clean-up, after everything queued before. */
export class End {
  constructor (readonly code: number) {}
}

// Layer messages are queued as they are, with no wrapper: one allocation fewer per delivery.
export type Task = ClientFrame | End | LayerMessage

/**
 * The connection as its parts report on it: its logger, and its channel's name for every log
 * line. `callConsumer` reads them only for a message without a handler, not on every delivery.
 */
export interface Reporter {
  readonly log: FastifyBaseLogger
  readonly channelName: string
  /** A layer message of a type the consumer has no handler for was dropped (counted). */
  noHandler?: () => void
}

/**
 * Hands a frame or a message (with how it came) to the consumer. Returns what to wait for when the
 * handler is asynchronous; throws what it threw (also a thenable whose `then` cannot be read).
 * A presence announcement without a handler is ignored silently: not every consumer cares.
 */
export function callConsumer (consumer: ConsumerHooks, task: ClientFrame | LayerMessage, info: Delivery | undefined,
  reporter: Reporter): PromiseLike<unknown> | undefined {
  let result: unknown
  if (task instanceof ClientFrame) {
    result = task.binary
      ? consumer[kReceive](undefined, toBuffer(task.data))
      : consumer[kReceive](toBuffer(task.data).toString('utf8'), undefined)
  } else if (task === SKIPPED) {
    result = consumer[kSkipped]?.(info ?? DIRECT)
  } else {
    const handler = findHandler(consumer, task.type, info)
    if (handler === undefined) {
      if (!isPresenceEvent(task.type)) {
        reporter.noHandler?.()
        reporter.log.warn({ type: task.type, channel: reporter.channelName, hint: missingHandlerHint(consumer, task.type) }, 'no handler for message type; dropped')
      }
      return undefined
    }
    result = handler.call(consumer, task, info ?? DIRECT)
  }
  return isThenable(result) ? result : undefined
}

/**
 * A handler (or a spawned task, `what`) failed after accept: logged, and the close its connection
 * gets. Joining too many groups is the client's doing (1008, at warn); anything else is the app's
 * bug (1011, at error). The log says what the client gets: a close code on a WebSocket; on an HTTP
 * response (`http`), its end, a 500 if its head was not sent yet (response-socket.ts); nothing
 * more once the connection has `ended` (or is closing: its close was decided before).
 */
export function failureClose (err: unknown, log: FastifyBaseLogger, channel: string, what = 'consumer handler', http = false, ended = false): [code: number, reason: string] {
  const [code, reason]: [number, string] = err instanceof TooManyGroupsError ? [1008, 'too many groups'] : [1011, 'internal error']
  const outcome = ended ? 'the connection had already ended' : http ? 'ending the response (500 if its head was not sent)' : `closing with ${code}`
  if (code === 1008) log.warn({ err, channel }, `consumer joined too many groups; ${outcome}`)
  else log.error({ ...thrownFields(err), channel }, `${what} failed; ${outcome}`)
  return [code, reason]
}

/**
 * A thrown value as a log line's fields: an Error as `err`; anything else (`throw undefined`, a
 * string) described as well, since a logger shows nothing of some of them.
 */
export function thrownFields (err: unknown): { err: unknown, thrown?: string } {
  return err instanceof Error ? { err } : { err, thrown: `a value that is not an Error: ${inspect(err, { depth: 1 })}` }
}

/** Whether `value` is a promise, or anything else with a `then()`. */
export function isThenable (value: unknown): value is PromiseLike<unknown> {
  return value !== null && (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
}
