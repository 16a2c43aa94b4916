/**
 * Background workers: Channels' `SyncConsumer` + `runworker`. A `ChannelConsumer` subclass serves
 * one named channel; `app.channelWorker(channel, Class)` runs it from `onReady` until `close()`.
 * Messages are dispatched by `type` exactly as in WebSocket consumers, one at a time; a handler
 * that throws is logged and the worker goes on. On a layer shared by several processes (Redis) the
 * named channel is a queue, so each message is handled by exactly one worker of all of them.
 */
import type { FastifyBaseLogger } from 'fastify'
import { canReceiveDelivery, type ChannelLayer, type Received } from './layers/types.js'
import { DIRECT } from './layers/local-channels.js'
import { assertChannelName } from './layers/names.js'
import { findHandler, isPresenceEvent, missingHandlerHint, reserveNames } from './dispatch.js'
import { InvalidChannelNameError, InvalidOptionError } from './errors.js'
import { thrownFields } from './connection/tasks.js'

export const kInitWorker = Symbol('fastify-channels.initWorker')

export type ChannelConsumerClass = new () => ChannelConsumer

export interface WorkerContext {
  channelLayer: ChannelLayer
  channelName: string
  log: FastifyBaseLogger
  /** A handler threw (counted in the metrics). */
  failed?: () => void
  /** A message of a type the worker has no handler for was dropped (counted). */
  noHandler?: () => void
}

/**
 * Base class of background workers. Write one method per message type:
 * `'deploy.start'` → `deployStart(message)` (or Django's `deploy_start`).
 */
export class ChannelConsumer {
  channelLayer!: ChannelLayer
  /** The named channel this worker serves. */
  channelName!: string
  /** The app's logger, bound to this worker's channel. */
  log!: FastifyBaseLogger;

  [kInitWorker] (ctx: WorkerContext): void {
    this.channelLayer = ctx.channelLayer
    this.channelName = ctx.channelName
    this.log = ctx.log
  }
}

reserveNames(ChannelConsumer.prototype, ['channelLayer', 'channelName', 'log'])

/** Throws the error `app.channelWorker()` reports for bad arguments. */
export function checkWorker (channel: unknown, Worker: unknown): asserts Worker is ChannelConsumerClass {
  assertChannelName(channel)
  if (channel.includes('!')) {
    // A name with `!` belongs to one process (it comes from newChannel()); workers serve shared queues.
    throw new InvalidChannelNameError(`Invalid worker channel "${channel}": a worker serves a named channel, without "!"`)
  }
  if (typeof Worker !== 'function' || !((Worker as { prototype?: unknown }).prototype instanceof ChannelConsumer)) {
    throw new InvalidOptionError(`channelWorker("${channel}", Worker): Worker must be a subclass of ChannelConsumer`)
  }
}

export interface RunningWorker {
  /** Stops receiving; resolves once the message being handled, if any, is done. */
  stop (): Promise<void>
}

const RETRY_MIN_MS = 100
const RETRY_MAX_MS = 5000
/** How long stop() waits for a receive() to end on its abort signal before it goes on without it. */
const RECEIVE_GRACE_MS = 1000

/**
 * Receives from `ctx.channelName` in a loop and hands each message to `worker`, one at a time.
 * A failing `receive()` (a backend briefly unreachable) is logged and retried with backoff;
 * a closed layer ends the loop.
 */
export function runWorker (worker: ChannelConsumer, ctx: WorkerContext): RunningWorker {
  worker[kInitWorker](ctx)
  const { channelLayer: layer, channelName: channel, log } = ctx
  const abort = new AbortController()
  const signal = abort.signal

  // With the message's `Delivery` when the layer can tell it (a group message's group and position).
  const receive = canReceiveDelivery(layer)
    ? async (): Promise<Received> => await layer.receiveDelivery(channel, { signal })
    : async (): Promise<Received> => ({ message: await layer.receive(channel, { signal }), info: DIRECT })

  async function handle ({ message, info }: Received): Promise<void> {
    try {
      const handler = findHandler(worker, message.type)
      if (handler === undefined) {
        if (!isPresenceEvent(message.type)) {
          ctx.noHandler?.()
          log.warn({ type: message.type, channel, hint: missingHandlerHint(worker, message.type) }, 'no worker handler for message type; dropped')
        }
        return
      }
      await handler.call(worker, message, info)
    } catch (err) {
      ctx.failed?.()
      log.error({ ...thrownFields(err), type: message.type, channel }, 'worker handler failed; going on with the next message')
    }
  }

  // The layer's receive() under way; stop() may give it up (below).
  let receiving: Promise<unknown> | undefined
  let gaveUp = false

  async function loop (): Promise<void> {
    let retryMs = RETRY_MIN_MS
    while (!signal.aborted) {
      let received: Received
      try {
        const pending = receive()
        receiving = pending
        try {
          received = await pending
        } finally {
          receiving = undefined
        }
      } catch (err) {
        if (signal.aborted) return
        if ((err as { code?: unknown }).code === 'FST_CHANNELS_LAYER_CLOSED') {
          log.error({ channel }, 'channel layer closed under a running worker; worker stopped')
          return
        }
        log.error({ err, channel, retryInMs: retryMs }, 'worker receive failed; retrying')
        await sleep(retryMs, signal)
        retryMs = Math.min(retryMs * 2, RETRY_MAX_MS)
        continue
      }
      if (gaveUp) {
        log.warn({ type: received.message.type, channel }, 'a message arrived after the worker stopped without its receive(); dropped')
        return
      }
      retryMs = RETRY_MIN_MS
      await handle(received)
    }
  }

  log.debug({ channel }, 'worker started')
  const done = loop()
  return {
    async stop () {
      abort.abort()
      // Every layer of this package ends a receive() on its signal at once. One that does not (a
      // layer of the app's own) is waited for RECEIVE_GRACE_MS, not for ever: app.close() goes on.
      const pending = receiving
      if (pending !== undefined) {
        let timer: ReturnType<typeof setTimeout> | undefined
        const grace = new Promise<void>(resolve => { timer = setTimeout(resolve, RECEIVE_GRACE_MS) })
        await Promise.race([done, grace])
        clearTimeout(timer)
        if (receiving === pending) {
          gaveUp = true
          log.warn({ channel }, 'the channel layer did not end receive() on its abort signal; worker stopped without it')
          return
        }
      }
      await done
      log.debug({ channel }, 'worker stopped')
    }
  }
}

function sleep (ms: number, signal: AbortSignal): Promise<void> {
  return new Promise(resolve => {
    const timer = setTimeout(finish, ms)
    signal.addEventListener('abort', finish, { once: true })
    function finish (): void {
      clearTimeout(timer)
      signal.removeEventListener('abort', finish)
      resolve()
    }
  })
}
