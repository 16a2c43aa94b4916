/**
 * A TypeScript user's first hour: the packed tarball installed into a bare ESM app (fastify,
 * fastify-channels and typescript, nothing else), compiled with `tsc --strict` and
 * `skipLibCheck: false`, so every declaration the package ships is checked as the user's compiler
 * sees it. The README's Quick start and its GroupsConsumer server are compiled as they stand in
 * README.md (the second with the app and URL it assumes); another file uses the
 * rest of the surface a first app touches (a `@ts-expect-error` line must be refused; the full list
 * of what must and must not compile is in test/types.test.ts), and a third is wrong on purpose to
 * show that the compile reports errors.
 */
import t from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { packedApp, root, run } from '../helpers/packed-app.js'

/** The first TypeScript block under the README's `## <heading>`. */
async function firstBlockUnder (heading: string): Promise<string> {
  const readme = await readFile(join(root, 'README.md'), 'utf8')
  const start = readme.indexOf(`\n## ${heading}\n`)
  const section = start < 0 ? undefined : readme.slice(start).split(/\n## /)[1]
  const code = section === undefined ? undefined : /^```ts\n([\s\S]*?)^```$/m.exec(section)?.[1]
  if (code === undefined) throw new Error(`README.md has no \`\`\`ts block under "## ${heading}"`)
  return code
}

// What the GroupsConsumer section's server block takes from the app around it (it imports the rest).
const groupsPrelude = `import Fastify from 'fastify'
const app = Fastify()
const url = 'redis://127.0.0.1:6379'
`

const bareApp = `
import Fastify from 'fastify'
import fastifyChannels, {
  ChannelConsumer, InMemoryChannelLayer, JsonWebsocketConsumer, RedisChannelLayer,
  type LayerMessage, type LayerValue, type ScopeSession
} from 'fastify-channels'
import { WebsocketCommunicator } from 'fastify-channels/testing'
import { GroupsConsumer, type ApiOf } from 'fastify-channels'
import { ChannelsClient } from 'fastify-channels/client'

declare module 'fastify-channels' {
  interface ChannelsUser { id: string, name: string }
}

interface Profile { name: string, age: number }

class Room extends JsonWebsocketConsumer {
  override async connect (): Promise<void> {
    const room: string = this.scope.params.room
    const name: string | undefined = this.scope.user?.name
    // Without @fastify/session installed, the session has the structural type (and is null at run time).
    const session: ScopeSession | null = this.scope.session
    if (session !== null) await session.save()
    await this.channelLayer.groupAdd(room, this.channelName)
    await this.accept()
    void name
  }

  override async receiveJson (content: { text: string }): Promise<void> {
    // The shipped message type, in short (test/types.test.ts goes through every case).
    const profile: Profile = { name: 'Ada', age: 36 }
    await this.channelLayer.groupSend('room', { type: 'room.message', text: content.text, ...profile, buffer: Buffer.from('x') })
    // @ts-expect-error a Date cannot cross a layer
    await this.channelLayer.groupSend('room', { type: 'x', when: new Date() })
  }

  async roomMessage (event: { text: string }): Promise<void> {
    await this.sendJson({ text: event.text })
  }
}

class Deploys extends ChannelConsumer {
  async deployStart (message: { service: string, replyGroup: string }): Promise<void> {
    await this.channelLayer.groupSend(message.replyGroup, { type: 'deploy.progress', service: message.service, pct: 100 })
  }
}

const app = Fastify({ routerOptions: { ignoreTrailingSlash: true } })
await app.register(fastifyChannels, {
  layer: process.env.REDIS_URL === undefined ? new InMemoryChannelLayer() : new RedisChannelLayer({ url: process.env.REDIS_URL, prefix: 'app' })
})
app.get('/ws/rooms/:room', { websocket: true, onRequest: async (request) => { void request.ws } }, Room.asHandler())
app.channelWorker('deploy-jobs', Deploys)

const received: LayerMessage = await app.channelLayer.receive('deploy-jobs')
const service: LayerValue = received.service
void service

const comm = new WebsocketCommunicator(app, '/ws/rooms/lobby/')
await comm.connect()
await comm.sendJsonTo({ text: 'hi' })
const reply = await comm.receiveJsonFrom<{ text: string }>()
const text: string = reply.text
void text
await comm.disconnect()

class Counter extends GroupsConsumer {
  static override actions = { add: { schema: { type: 'object', required: ['by'] } } }
  override canJoin (group: string): boolean { return group === 'counter' }
  async add ({ by }: { by: number }): Promise<number> { return by + 1 }
}
app.get('/ws/counter', { websocket: true }, Counter.asHandler())
const client = new ChannelsClient<ApiOf<typeof Counter>>('ws://127.0.0.1:3000/ws/counter')
client.join('counter', { message (data, info) { void data; void info.offset } })
const sum: number = await client.call('add', { by: 1 })
// @ts-expect-error the client checks the arguments against the server's method
await client.call('add', { by: 'one' })
client.close()
void sum
`

// Wrong on purpose: the compile must report these two lines, with their file.
const wrongApp = `
import Fastify from 'fastify'
import fastifyChannels from 'fastify-channels'
const app = Fastify()
await app.register(fastifyChannels)
await app.channelLayer.send('jobs', { type: 'job.start', at: new Date() })
app.get('/ws', { websocket: 'yes' }, async () => {})
`

/**
 * `tsc --strict` of `files`, in a program of their own (a module augmentation in one file would
 * reach the others): the error lines.
 */
async function compile (dir: string, name: string, files: string[]): Promise<string[]> {
  await writeFile(join(dir, `tsconfig.${name}.json`), JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'NodeNext', strict: true, skipLibCheck: false, noEmit: true },
    files
  }, null, 2))
  const output = await run(process.execPath, [join('node_modules', 'typescript', 'bin', 'tsc'), '-p', `tsconfig.${name}.json`, '--strict', '--pretty', 'false'],
    { cwd: dir, timeout: 120_000 })
    .then(({ stdout }) => stdout, (err: { stdout?: string }) => err.stdout ?? String(err))
  return output.split('\n').filter(line => /^\S.*\(\d+,\d+\): error /.test(line))
}

t.test('the Quick start and a bare app compile against the packed package under --strict without skipLibCheck', async t => {
  const { dir } = await packedApp(t, ['fastify', 'typescript'])
  await writeFile(join(dir, 'quick-start.ts'), await firstBlockUnder('Quick start'))
  await writeFile(join(dir, 'groups-consumer.ts'), groupsPrelude + await firstBlockUnder('GroupsConsumer and the client'))
  await writeFile(join(dir, 'bare-app.ts'), bareApp)
  await writeFile(join(dir, 'wrong.ts'), wrongApp)
  // Each README block alone, as a reader copies it into an app of their own.
  const [quick, groups, bare] = await Promise.all([
    compile(dir, 'quick-start', ['quick-start.ts']),
    compile(dir, 'groups-consumer', ['groups-consumer.ts']),
    compile(dir, 'bare-app', ['bare-app.ts', 'wrong.ts'])
  ])
  const errors = [...quick, ...groups, ...bare]
  const where = (file: string): string[] => errors.filter(line => line.startsWith(`${file}(`))

  t.same(where('quick-start.ts'), [], 'the README\'s Quick start compiles')
  t.same(where('groups-consumer.ts'), [], 'the README\'s GroupsConsumer server compiles')
  t.same(where('bare-app.ts'), [], 'the bare app compiles, and every @ts-expect-error line is refused')
  t.same(errors.filter(line => !/^(quick-start|groups-consumer|bare-app|wrong)\.ts\(/.test(line)), [], 'no error in any declaration file (skipLibCheck: false)')
  t.match(where('wrong.ts'), [
    /^wrong\.ts\(6,\d+\): error TS2322: Type 'Date' is not assignable to type 'LayerValue'/,
    /^wrong\.ts\(7,\d+\): error TS2769: /
  ], 'the compile can fail: the wrong lines are reported')
  t.equal(where('wrong.ts').length, 2, 'exactly those two', { errors })
})
