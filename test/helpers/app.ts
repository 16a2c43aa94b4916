import Fastify, { type FastifyInstance } from 'fastify'
import fastifyWebsocket from '@fastify/websocket'
import type { Test } from 'tap'
import { setTimeout as wait } from 'node:timers/promises'
import fastifyChannels, { WebsocketConsumer, type FastifyChannelsOptions } from '../../lib/index.js'

/** A Fastify app with the plugin registered and logging captured for assertions. */
export interface TestApp {
  app: FastifyInstance
  logs: Array<Record<string, unknown>>
}

export async function buildApp (opts: FastifyChannelsOptions = {}, routes?: (app: FastifyInstance) => void): Promise<TestApp> {
  const logs: Array<Record<string, unknown>> = []
  const stream = { write (line: string) { logs.push(JSON.parse(line) as Record<string, unknown>) } }
  const app = Fastify({ logger: { level: 'debug', stream } })
  await app.register(fastifyChannels, opts)
  routes?.(app)
  await app.ready()
  return { app, logs }
}

/**
 * An app that registered its own `@fastify/websocket` before the plugin (whose preClose closes
 * every socket itself), without a logger.
 */
export async function appWithOwnWebsocket (opts: FastifyChannelsOptions = {}): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(fastifyWebsocket)
  await app.register(fastifyChannels, opts)
  return app
}

/**
 * A consumer in `groups` whose connect() waits a minute (a slow lookup) unless its signal is
 * aborted first, then accepts; `events` gets 'connect', and 'stopped: <error name>' if it stopped.
 */
export function waitingConsumer (events: string[], groups: string[] = []): typeof WebsocketConsumer {
  return class Waits extends WebsocketConsumer {
    override groups = [...groups]
    override async connect (): Promise<void> {
      events.push('connect')
      try {
        await wait(60_000, undefined, { signal: this.signal })
        await this.accept()
      } catch (err) {
        events.push(`stopped: ${(err as Error).name}`)
      }
    }
  }
}

export function sleep (ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms))
}

/**
 * Waits until `check()` is true, polling; fails after `ms`. The default is long because it only
 * delays a failure: a passing check returns at once, and a CI host may stall for a second.
 */
export async function eventually (check: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await sleep(5)
  }
}

/** The process' unhandled rejections while test `t` runs (an empty list is what every test wants). */
export function unhandledRejections (t: Test): unknown[] {
  const seen: unknown[] = []
  const listener = (reason: unknown): void => { seen.push(reason) }
  process.on('unhandledRejection', listener)
  t.teardown(() => { process.off('unhandledRejection', listener) })
  return seen
}
