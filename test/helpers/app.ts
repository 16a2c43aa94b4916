import Fastify, { type FastifyInstance } from 'fastify'
import fastifyChannels, { type FastifyChannelsOptions } from '../../lib/index.js'

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
