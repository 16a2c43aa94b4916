/** The GroupsConsumer the protocol tests talk to, and an app that serves it on 127.0.0.1. */
import type { FastifyInstance } from 'fastify'
import { GroupsConsumer, InMemoryChannelLayer, type Delivery, type LayerMessage, type FastifyChannelsOptions } from '../../lib/index.js'
import { buildApp, type TestApp } from '../helpers/app.js'

export const called: string[] = []

export class Rooms extends GroupsConsumer {
  static override actions = {
    post: {
      schema: {
        type: 'object',
        required: ['room', 'text'],
        additionalProperties: false,
        properties: { room: { type: 'string' }, text: { type: 'string', maxLength: 20 } }
      }
    },
    echo: {},
    fail: {},
    refuse: {},
    bigint: {},
    wait: { schema: { type: 'object', properties: { ms: { type: 'integer', minimum: 0, maximum: 10000 } } } }
  }

  override maxJoins = 3

  override canJoin (group: string): boolean | Promise<boolean> {
    if (group === 'room.explode') throw new Error('permission store down')
    // A mistake: a value that is not a boolean.
    if (group === 'room.yes') return 'yes' as unknown as boolean
    if (group === 'room.slow') return new Promise(resolve => setTimeout(() => resolve(true), 20))
    return group.startsWith('room.')
  }

  override presenceInfo (group: string): { name: string } {
    return { name: String(this.scope.query.name ?? 'anonymous') }
  }

  override forward (message: LayerMessage, info: Delivery): unknown {
    if (message.type === 'room.secret') return undefined
    if (message.type === 'room.poison') throw new Error('forward() bug')
    if (message.type === 'room.poison.async') return Promise.reject(new Error('async forward() bug'))
    // What JSON cannot carry: a bigint, a cycle, a function.
    if (message.type === 'room.poison.bigint') return { n: 1n }
    if (message.type === 'room.poison.cycle') { const cycle: Record<string, unknown> = {}; cycle.self = cycle; return cycle }
    if (message.type === 'room.poison.function') return () => 1
    if (message.type === 'room.shout') return { text: String(message.text).toUpperCase() }
    return message
  }

  async post ({ room, text }: { room: string, text: string }): Promise<{ offset: number | undefined }> {
    called.push('post')
    const at = await this.channelLayer.groupSend(`room.${room}`, { type: 'room.message', text })
    return { offset: at?.offset }
  }

  async echo (args: unknown): Promise<unknown> {
    called.push('echo')
    return args
  }

  async fail (): Promise<void> {
    called.push('fail')
    throw new Error('database down')
  }

  async refuse (): Promise<void> {
    called.push('refuse')
    throw Object.assign(new Error('room is full'), { statusCode: 409, code: 'ROOM_FULL' })
  }

  async bigint (): Promise<bigint> {
    called.push('bigint')
    return 1n
  }

  async wait ({ ms = 0 }: { ms?: number }): Promise<number> {
    await new Promise(resolve => setTimeout(resolve, ms))
    return ms
  }

  // A handler by type for the consumer's own messages; a client's group must never reach it.
  async roomMessage (): Promise<void> {
    called.push('roomMessage')
  }
}

export interface RoomsApp extends TestApp {
  url: string
  port: number
}

export const roomGroups = { 'room.*': { history: { size: 100, ttl: 60 }, presenceEvents: true } }

/** Serves Rooms at /ws/rooms on 127.0.0.1 (`port`: 0 for a free one, or the port of an app to replace). */
export async function roomsApp (opts: FastifyChannelsOptions = {}, routes?: (app: FastifyInstance) => void, port = 0): Promise<RoomsApp> {
  const layer = opts.layer ?? new InMemoryChannelLayer({ groups: roomGroups })
  const built = await buildApp({ ...opts, layer }, app => {
    app.get('/ws/rooms', { websocket: true }, Rooms.asHandler())
    routes?.(app)
  })
  await built.app.listen({ port, host: '127.0.0.1' })
  const address = built.app.server.address() as { port: number }
  return { ...built, url: `ws://127.0.0.1:${address.port}/ws/rooms`, port: address.port }
}
