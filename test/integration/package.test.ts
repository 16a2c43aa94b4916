// The published tarball works in a fresh app: `npm pack`, install it next to fastify, import both
// entry points and hold a conversation with a consumer.
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile, readdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)
const root = resolve(import.meta.dirname, '../..')

t.test('npm pack produces a tarball that a fresh app can import and use', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-channels-pack-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  // --ignore-scripts: `npm test` has just built dist/; rebuilding here would race other test files importing it.
  const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: root })
  const [packed] = JSON.parse(stdout) as Array<{ filename: string, files: Array<{ path: string }> }>
  const files = packed.files.map(f => f.path)
  t.ok(files.includes('dist/index.js') && files.includes('dist/index.d.ts'), 'main entry and its types are packed')
  t.ok(files.includes('dist/testing.js') && files.includes('dist/testing.d.ts'), 'testing entry and its types are packed')
  t.notOk(files.some(f => f.startsWith('test/') || f.startsWith('lib/') || f.startsWith('bench/')), 'sources and tests stay out')

  const app = join(dir, 'app')
  await run('mkdir', ['-p', app])
  await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'fresh-app', private: true, type: 'module' }))
  const fastifyVersion = (await import('fastify/package.json', { with: { type: 'json' } })).default.version
  await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', join(dir, packed.filename), `fastify@${fastifyVersion}`], { cwd: app, timeout: 240_000 })
  await writeFile(join(app, 'main.js'), `
import Fastify from 'fastify'
import fastifyChannels, { JsonWebsocketConsumer, InMemoryChannelLayer } from 'fastify-channels'
import { WebsocketCommunicator } from 'fastify-channels/testing'
class Echo extends JsonWebsocketConsumer {
  async receiveJson (content) { await this.sendJson({ echo: content }) }
}
const app = Fastify()
await app.register(fastifyChannels, { layer: new InMemoryChannelLayer() })
app.get('/ws', { websocket: true }, Echo.asHandler())
const comm = new WebsocketCommunicator(app, '/ws')
await comm.connect()
await comm.sendJsonTo({ hello: 'world' })
console.log(JSON.stringify(await comm.receiveJsonFrom()))
await comm.disconnect()
await app.close()
`)
  const result = await run(process.execPath, ['main.js'], { cwd: app, timeout: 30_000 })
  t.equal(result.stdout.trim(), '{"echo":{"hello":"world"}}')
  t.ok((await readdir(join(app, 'node_modules', 'fastify-channels', 'dist'))).includes('index.d.ts'))
})
