/**
 * Types, end to end, as an app sees them: a small app that augments `ChannelsUser` is compiled with
 * the project's strict settings and must type-check, with `@ts-expect-error` marking what must
 * not. It is compiled on its own (virtual files), so its augmentation does not leak into the
 * other tests; a deliberately wrong file in the same compile shows the check can fail.
 */
import t from 'tap'
import ts from 'typescript'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

const app = `
import Fastify from 'fastify'
import fastifyCookie from '@fastify/cookie'
import fastifySession, { type FastifySessionObject } from '@fastify/session'
import fastifyChannels, {
  JsonWebsocketConsumer, AsyncHttpConsumer, login, logout, type ChannelsUser, type Scope, type HttpScope,
  type FastifyChannelsOptions, type ChannelLayer, type LayerMessage, type LayerValue, type Delivery
} from 'fastify-channels'
import { WebsocketCommunicator } from 'fastify-channels/testing'
import { pino } from 'pino'

declare module 'fastify-channels' {
  interface ChannelsUser { id: string, name: string }
}

class Chat extends JsonWebsocketConsumer {
  override async connect (): Promise<void> {
    const scope: Scope = this.scope
    scope.type satisfies 'websocket'
    const user: ChannelsUser | null = scope.user
    if (user === null) { await this.close(4401, 'sign in first'); return }
    const id: string = user.id
    // @ts-expect-error not a field of the app's user
    void user.email
    const room: string | undefined = scope.params.room
    const cookies: Record<string, string> = scope.cookies
    const session = scope.session
    // With @fastify/session in the app, the scope's session is that plugin's own type.
    const sessionObject: FastifySessionObject | null = session
    void sessionObject
    // @ts-expect-error the session is null without @fastify/session
    void session.sessionId
    if (session !== null) {
      const sid: string = session.sessionId
      await session.save()
      void sid
    }
    void id; void room; void cookies
    await this.accept()
  }

  override async receiveJson (content: { name?: string }): Promise<void> {
    await login(this.scope, { id: '1', name: content.name ?? 'anonymous' })
    // @ts-expect-error a user has the app's shape
    await login(this.scope, { name: 'no id' })
    // @ts-expect-error null is not a user: that is logout()
    await login(this.scope, null)
    await logout(this.scope)
  }
}

// Every method a consumer overrides may be written without async: what it returns is awaited either way.
class Plain extends JsonWebsocketConsumer {
  override connect (): void { void this.accept() }
  override receiveJson (content: unknown): void { void this.sendJson(content) }
  override disconnect (code: number): void { void code }
}
class PlainHttp extends AsyncHttpConsumer {
  override handle (): void { void this.sendBody('done') }
  override disconnect (): void {}
}
void Plain; void PlainHttp

// An HTTP consumer: its own scope type, the response calls, the same tasks and handlers.
class Events extends AsyncHttpConsumer {
  override groups = ['news']
  override async handle (body: unknown): Promise<void> {
    const scope: HttpScope = this.scope
    scope.type satisfies 'http'
    // @ts-expect-error an HTTP consumer's scope is not a WebSocket scope
    const wsScope: Scope = this.scope
    const user: ChannelsUser | null = scope.user
    if (user !== null) await login(this.scope, user)
    await this.sendHeaders({ status: 200, headers: { 'content-type': 'text/event-stream', 'x-count': 1 } })
    await this.sendEvent({ data: { n: 1 }, event: 'tick', id: 3 })
    // @ts-expect-error an id is a string or a number
    await this.sendEvent({ data: 'x', id: { at: 1 } })
    await this.sendBody(Buffer.from('x'), { more: true })
    // @ts-expect-error a chunk is a string or bytes
    await this.sendBody(42)
    this.spawn(async signal => { signal.throwIfAborted() })
    const aborted: boolean = this.signal.aborted
    void wsScope; void body; void aborted
  }

  async newsItem (message: { text: string }, info: Delivery): Promise<void> {
    await this.sendEvent({ data: message.text, id: \`\${info.epoch ?? ''}:\${info.offset ?? 0}\` })
  }

  override async disconnect (): Promise<void> {}
}

interface Profile { name: string, age: number }   // an interface has no index signature
type Point = { x: number, y: number }             // a type alias has an implicit one
class Celsius { constructor (readonly degrees: number) {} }

// Message values are LayerValue: what a layer refuses at run time does not compile.
async function messages (layer: ChannelLayer, channel: string): Promise<void> {
  const profile: Profile = { name: 'Ada', age: 36 }
  const at: Point = { x: 1, y: 2 }
  await layer.groupSend('room', { type: 'room.profile', ...profile })
  await layer.groupSend('room', { type: 'room.profile', profile: { ...profile } })
  await layer.groupSend('room', { type: 'room.point', at, path: [at, at], tags: ['a', 'b'] as const })
  await layer.send(channel, { type: 'room.bytes', bytes: new Uint8Array([1]), buffer: Buffer.from('x'), none: null, ok: true, n: 1.5 })
  // @ts-expect-error undefined cannot cross a layer
  await layer.groupSend('room', { type: 'x', missing: undefined })
  // @ts-expect-error nor can a Date
  await layer.groupSend('room', { type: 'x', when: new Date() })
  // @ts-expect-error nor a class instance
  await layer.groupSend('room', { type: 'x', temperature: new Celsius(21) })
  // @ts-expect-error nor a function
  await layer.send(channel, { type: 'x', callback: () => {} })
  // @ts-expect-error an interface nested as a value has no index signature: spread it, as above
  await layer.groupSend('room', { type: 'x', profile })
  // @ts-expect-error a message has a string type
  await layer.groupSend('room', { text: 'no type' })
  const received: LayerMessage = await layer.receive(channel)
  const value: LayerValue = received.text
  // @ts-expect-error a received value is not a string until narrowed
  const text: string = received.text
  void value; void text
}

const app = Fastify()
await app.register(fastifyCookie)
await app.register(fastifySession, { secret: 'a secret with at least 32 characters....' })
const options: FastifyChannelsOptions = {
  allowedOrigins: ['.example.com', 'https://example.com:8443'],
  rejectMissingOrigin: true,
  maxGroupsPerConnection: 10,
  maxPayload: 65536,
  heartbeatInterval: 0,
  maxBufferedBytes: 1024,
  getUser: async (request) => ({ id: String(request.headers['x-user-id']), name: 'n' })
}
await app.register(fastifyChannels, options)
// @ts-expect-error getUser must return the app's ChannelsUser
const badGetUser: FastifyChannelsOptions = { getUser: () => ({ name: 'no id' }) }
// @ts-expect-error allowedOrigins is a list of patterns
const badOrigins: FastifyChannelsOptions = { allowedOrigins: '*' }
void badGetUser; void badOrigins
await messages(app.channelLayer, 'worker')
app.get('/ws/:room', { websocket: true }, Chat.asHandler())
app.get('/events/:room', Events.asHandler())
await app.channelLayer.groupSend('lobby', { type: 'chat.message', text: 'hi' })
const comm = new WebsocketCommunicator(app, '/ws/lobby', { headers: { cookie: 'sessionId=x', origin: 'https://a.example.com' } })
// An app with its own logger has other type arguments: the test kit takes it all the same.
const withOwnLogger = Fastify({ loggerInstance: pino({ level: 'silent' }) })
void new WebsocketCommunicator(withOwnLogger, '/ws/lobby')
const { status }: { status: number } = await comm.connect()
const reply = await comm.receiveJsonFrom<{ text: string }>()
const replyText: string = reply.text
const frame: string = await comm.receiveFrom<string>()
const anyFrame = await comm.receiveFrom()
// @ts-expect-error without a type argument, a frame may be bytes
const notText: string = anyFrame
// @ts-expect-error without a type argument, JSON is unknown
void (await comm.receiveJsonFrom()).text
void status; void replyText; void frame; void notText
`

// GroupsConsumer and its client, typed end to end: the API's own example, then what must not compile.
const groups = `
import Fastify from 'fastify'
import WebSocket from 'ws'
import fastifyChannels, { GroupsConsumer, type ApiOf, type Delivery, type LayerMessage } from 'fastify-channels'
import { ChannelsClient, type ChannelsClientError, type ClientState, type StateDetail, type Subscription } from 'fastify-channels/client'

// A schema typed as an interface (as JSONSchema7 is): no index signature, still a schema.
interface AppSchema { type: string, properties?: Record<string, AppSchema> }
const anythingSchema: AppSchema = { type: 'object' }

export class RoomsConsumer extends GroupsConsumer {
  override canJoin (group: string) { return group.startsWith('room.') && this.scope.user !== null }
  override presenceInfo (group: string) { return { name: this.scope.user!.name } }
  override forward (message: LayerMessage, info: Delivery) { return info.offset === undefined ? undefined : { text: message.text } }
  static override actions = {
    post: { schema: { type: 'object', required: ['room', 'text'],
                      properties: { room: { type: 'string' }, text: { type: 'string', maxLength: 2000 } } } },
    ping: {},
    when: {},
    nothing: {},
    anything: { schema: anythingSchema }
  }
  async post ({ room, text }: { room: string; text: string }) {
    const at = await this.channelLayer.groupSend(\`room.\${room}\`, { type: 'room.message', text, from: this.scope.user!.name })
    return { offset: at?.offset }
  }
  async ping () { return 'pong' as const }
  async when () { return { at: new Date(), tags: ['a', undefined], note: undefined as string | undefined, drop: () => 1 } }
  async nothing () {}
  async anything (args: object): Promise<unknown> { return null }
  async notAnAction (x: number) { return x }
}
export type RoomsApi = ApiOf<typeof RoomsConsumer>

const app = Fastify()
await app.register(fastifyChannels)
app.get('/ws/rooms', { websocket: true }, RoomsConsumer.asHandler())

export const client = new ChannelsClient<RoomsApi>('ws://127.0.0.1:3000/ws/rooms', { WebSocket })
client.on('state', (state: ClientState, detail: StateDetail) => { void state; void detail.delay })
const sub: Subscription = client.join<{ text: string }>('room.lobby', {
  message (data, info) { const text: string = data.text; const offset: number | undefined = info.offset; void text; void offset },
  presence (entries) { const name = entries[0]?.info.name; void name },
  gap () {},
  error (err: ChannelsClientError) { const code: string = err.code; void code }
})
const joined = await sub.ready
const at: number | undefined = joined.position?.offset
const reply = await client.call('post', { room: 'lobby', text: 'hi' }, { timeout: 5000 })
const offset: number | undefined = reply.offset
const pong: 'pong' = await client.call('ping')
// Results as JSON delivers them: a Date as a string, an undefined array item as null, functions gone.
const when = await client.call('when')
const at2: string = when.at
const tags: Array<string | null> = when.tags
const note: string | undefined = when.note
const none: undefined = await client.call('nothing')
// A result typed unknown stays unknown (it may be null): narrowed before use.
const anything = await client.call('anything', {})
// @ts-expect-error unknown, not an object: it may be null
anything.toString()
// @ts-expect-error a Date arrives as a string
when.at.getTime()
// @ts-expect-error a function is not sent
void when.drop
// @ts-expect-error a property that may be undefined may be missing from what arrives: not a string
const noteText: string = when.note
void noteText
// @ts-expect-error an argument is missing
await client.call('post', { room: 'lobby' })
// @ts-expect-error an argument of the wrong type
await client.call('post', { room: 'lobby', text: 42 })
// @ts-expect-error arguments are required when the method takes some
await client.call('post')
// @ts-expect-error a method not listed in static actions cannot be called
await client.call('notAnAction', 1)
// @ts-expect-error nor can a name the server does not have
await client.call('nope', {})
// @ts-expect-error the result is typed too
const wrongResult: string = await client.call('post', { room: 'a', text: 'b' })
// @ts-expect-error canJoin answers with a boolean
class BadJoin extends GroupsConsumer { override canJoin (group: string) { return group } }
void at; void offset; void pong; void wrongResult; void BadJoin; void at2; void tags; void note; void none
sub.leave(); client.close()
`

// A wrong call, on its own: tsc must refuse it.
const wrongCall = `
import { client } from './types-fixture-groups.js'
await client.call('post', { room: 1, text: 'hi' })
`

// Fails on purpose, line by line; it shares the program (and so the augmentation) with the app.
const wrong = `
import { login, type Scope } from 'fastify-channels'
declare const scope: Scope
export const id: number = scope.user?.id ?? 0
await login(scope, { name: 'no id' })
`

// Values that may be undefined, given to options, in an app compiled with exactOptionalPropertyTypes.
const exactOptional = `
import { AsyncHttpConsumer, InMemoryChannelLayer, RedisChannelLayer, type FastifyChannelsOptions, type StreamPosition } from 'fastify-channels'
import { ChannelsClient } from 'fastify-channels/client'
import { WebsocketCommunicator } from 'fastify-channels/testing'
import Fastify from 'fastify'
declare const url: string | undefined
declare const n: number | undefined
declare const since: StreamPosition | undefined
declare const id: string | undefined
void new RedisChannelLayer({ url, prefix: 'chat', timeout: n, membershipLease: n })
const layer = new InMemoryChannelLayer({ capacity: n, expiry: n, groups: { 'a.*': { history: { size: 1, ttl: 1 }, presenceEvents: undefined } } })
await layer.groupAdd('g', 'c', { since })
await layer.history('g', { since, limit: n })
const options: FastifyChannelsOptions = { heartbeatInterval: n, maxBufferedBytes: n, allowedOrigins: undefined }
void options
void new ChannelsClient('ws://127.0.0.1/ws', { callTimeout: n, minDelay: n, heartbeat: n })
void new WebsocketCommunicator(Fastify(), '/ws', { headers: undefined })
export class Feed extends AsyncHttpConsumer {
  override async handle () {
    await this.sendHeaders({ status: n })
    await this.sendEvent({ data: 'x', id, event: undefined })
    await this.sendBody('', { more: undefined })
  }
}
`

/** Type errors per virtual file, from one compile with the project's tsconfig (one, because it is slow), and `extra` options. */
function typeErrors (files: Record<string, string>, extra: ts.CompilerOptions = {}): Record<string, string[]> {
  const virtual = new Map(Object.entries(files).map(([name, source]) => [path.join(root, 'test', name), source]))
  const configFile = ts.readConfigFile(path.join(root, 'tsconfig.json'), ts.sys.readFile)
  const parsed = ts.parseJsonConfigFileContent(configFile.config, ts.sys, root)
  const options: ts.CompilerOptions = {
    ...parsed.options,
    ...extra,
    noEmit: true,
    // The package's own name, as an app imports it.
    paths: { 'fastify-channels': ['./lib/index.ts'], 'fastify-channels/testing': ['./lib/testing.ts'], 'fastify-channels/client': ['./lib/client/index.ts'] }
  }
  const host = ts.createCompilerHost(options)
  const getSourceFile = host.getSourceFile.bind(host)
  host.getSourceFile = (fileName, languageVersion, ...rest) => {
    const source = virtual.get(fileName)
    return source !== undefined ? ts.createSourceFile(fileName, source, languageVersion) : getSourceFile(fileName, languageVersion, ...rest)
  }
  const fileExists = host.fileExists.bind(host)
  host.fileExists = fileName => virtual.has(fileName) || fileExists(fileName)
  const readFile = host.readFile.bind(host)
  host.readFile = fileName => virtual.get(fileName) ?? readFile(fileName)
  const program = ts.createProgram([...virtual.keys()], options, host)
  const result: Record<string, string[]> = {}
  for (const [fileName] of virtual) {
    const file = program.getSourceFile(fileName)
    if (file === undefined) throw new Error(`${fileName} was not compiled`)
    // Only these files are checked: the library is type-checked by \`npm run typecheck\`.
    const diagnostics = [...program.getSyntacticDiagnostics(file), ...program.getSemanticDiagnostics(file)]
    result[path.basename(fileName)] = diagnostics.map(d => {
      const line = d.start === undefined ? 0 : file.getLineAndCharacterOfPosition(d.start).line + 1
      return `${line}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`
    })
  }
  return result
}

t.test('an app that augments ChannelsUser type-checks end to end; what must not compile does not', async t => {
  const errors = typeErrors({ 'types-fixture-app.ts': app, 'types-fixture-wrong.ts': wrong, 'types-fixture-groups.ts': groups, 'types-fixture-wrong-call.ts': wrongCall })
  t.same(errors['types-fixture-app.ts'], [], 'the app compiles, and each @ts-expect-error line is an error')
  t.same(errors['types-fixture-groups.ts'], [], 'a GroupsConsumer and its typed client compile; each wrong call is refused')
  t.match(errors['types-fixture-wrong-call.ts'], [/^3: .*Type 'number' is not assignable to type 'string'/s], 'a client.call with wrong arguments fails tsc')
  t.equal(errors['types-fixture-wrong-call.ts'].length, 1)
  t.match(errors['types-fixture-wrong.ts'], [
    /^4: Type 'string \| 0' is not assignable to type 'number'/,
    /^5: .*Property 'id' is missing/s
  ], 'the check can fail: the wrong lines are reported')
  t.equal(errors['types-fixture-wrong.ts'].length, 2)
})

t.test('with exactOptionalPropertyTypes, options given a value that may be undefined compile, as they run (test/undefined-options.test.ts)', async t => {
  const errors = typeErrors({ 'types-fixture-exact-optional.ts': exactOptional }, { exactOptionalPropertyTypes: true })
  t.same(errors['types-fixture-exact-optional.ts'], [])
})
