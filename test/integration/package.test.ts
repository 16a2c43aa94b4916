// The published tarball works in a fresh app: `npm pack`, install it next to fastify, import both
// entry points and hold a conversation with a consumer; its stack traces open on files it ships;
// what it installs runs on every Node version it declares.
import t from 'tap'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { dirname, join, relative, resolve, sep } from 'node:path'
import semver from 'semver'
import { packedApp, root, run } from '../helpers/packed-app.js'

t.test('npm pack produces a tarball that a fresh app can import and use', async t => {
  const { dir: app, packed: files, installLog } = await packedApp(t, ['fastify'])
  t.ok(files.includes('dist/index.js') && files.includes('dist/index.d.ts'), 'main entry and its types are packed')
  t.ok(files.includes('dist/testing.js') && files.includes('dist/testing.d.ts'), 'testing entry and its types are packed')
  t.ok(files.includes('dist/client/index.js') && files.includes('dist/client/index.d.ts'), 'client entry and its types are packed')
  t.notOk(files.some(f => f.startsWith('test/') || f.startsWith('bench/') || f.startsWith('example-app/')), 'tests, benchmarks and the example stay out')
  const installed = join(app, 'node_modules', 'fastify-channels')

  await writeFile(join(app, 'main.js'), `
import Fastify from 'fastify'
import WebSocket from 'ws'
import fastifyChannels, { JsonWebsocketConsumer, GroupsConsumer, InMemoryChannelLayer } from 'fastify-channels'
import { WebsocketCommunicator } from 'fastify-channels/testing'
import { ChannelsClient } from 'fastify-channels/client'
class Echo extends JsonWebsocketConsumer {
  async receiveJson (content) { await this.sendJson({ echo: content }) }
}
class Sums extends GroupsConsumer {
  static actions = { add: { schema: { type: 'object', required: ['a', 'b'] } } }
  async add ({ a, b }) { return a + b }
}
const app = Fastify()
await app.register(fastifyChannels, { layer: new InMemoryChannelLayer() })
app.get('/ws', { websocket: true }, Echo.asHandler())
app.get('/sums', { websocket: true }, Sums.asHandler())
const comm = new WebsocketCommunicator(app, '/ws')
await comm.connect()
await comm.sendJsonTo({ hello: 'world' })
console.log(JSON.stringify(await comm.receiveJsonFrom()))
await comm.disconnect()
await app.listen({ port: 0, host: '127.0.0.1' })
const client = new ChannelsClient(\`ws://127.0.0.1:\${app.server.address().port}/sums\`, { WebSocket })
console.log(await client.call('add', { a: 1, b: 2 }))
client.close()
await app.close()
`)
  const result = await run(process.execPath, ['main.js'], { cwd: app, timeout: 30_000 })
  t.same(result.stdout.trim().split('\n'), ['{"echo":{"hello":"world"}}', '3'], 'the consumer answers through the testing entry, and a GroupsConsumer through the client entry')
  t.ok(readdirSync(join(installed, 'dist')).includes('index.d.ts'), 'the types are installed')

  t.test('every source map points at a file the package ships', async t => {
    const maps = readdirSync(join(installed, 'dist'), { recursive: true, encoding: 'utf8' }).filter(f => f.endsWith('.map'))
    t.ok(maps.some(f => f.endsWith('.js.map')) && maps.some(f => f.endsWith('.d.ts.map')), 'code and declaration maps are packed')
    const missing: string[] = []
    for (const map of maps) {
      const file = join(installed, 'dist', map)
      const { sources } = JSON.parse(await readFile(file, 'utf8')) as { sources: string[] }
      for (const source of sources) {
        const target = resolve(dirname(file), source)
        if (!target.startsWith(installed + sep) || !existsSync(target)) missing.push(`${map} → ${source}`)
      }
    }
    t.same(missing, [], 'no map names a source outside the package or missing from it')
  })

  t.test('a stack trace from the installed package opens on the line that threw', async t => {
    await writeFile(join(app, 'trace.js'), `
import { InMemoryChannelLayer } from 'fastify-channels'
await new InMemoryChannelLayer().send('not a channel name', { type: 'x' }).catch(err => console.log(err.stack))
`)
    const { stdout } = await run(process.execPath, ['--enable-source-maps', 'trace.js'], { cwd: app, timeout: 30_000 })
    const frame = /\((\/[^()]+?):(\d+):\d+\)/.exec(stdout.split('\n').find(line => line.trim().startsWith('at ')) ?? '')
    t.ok(frame, 'the top frame names a file and line', { stdout })
    if (frame === null) return
    const [, file, line] = frame
    t.match(relative(installed, file), /^lib[/\\].+\.ts$/, 'the frame is in the package\'s TypeScript source')
    if (!existsSync(file)) return t.fail(`${file} is not installed`)
    const text = (await readFile(file, 'utf8')).split('\n')[Number(line) - 1]
    t.match(text, /InvalidChannelNameError/, 'and that line is where the error was thrown')
  })

  t.test('what the package installs supports every Node version it declares', async t => {
    const declared = readManifest(root).engines?.node ?? ''
    t.ok(semver.validRange(declared), `the package declares the Node it supports: ${declared}`)
    const tree = dependencyTree(installed, ['dependencies', 'optionalDependencies'])
    t.ok(['ws', '@types/ws', 'ioredis'].every(name => [...tree.keys()].some(id => id.startsWith(`${name}@`))),
      'the walk reaches the runtime dependencies')
    t.same(narrower(tree, declared), [], `no package in our tree asks for more than Node ${declared}`)
    // Fastify's own tree is the app's; say what it brings, so the README's note on it stays true.
    const warned = [...installLog.matchAll(/EBADENGINE\s+package: '([^']+)'/g)].map(m => m[1])
    t.comment(warned.length === 0 ? 'npm warned about no engine' : `EBADENGINE from outside our tree: ${warned.join(', ')}`)
    t.same(warned.filter(id => tree.has(id)), [], 'npm warned about no engine in our tree')
  })
})

t.test('this repository\'s own install supports the Node versions its devEngines names', async t => {
  const manifest = readManifest(root)
  const wanted = manifest.devEngines?.runtime?.version ?? ''
  t.ok(semver.validRange(wanted), `devEngines names a Node range: ${wanted}`)
  t.ok(semver.subset(wanted, manifest.engines?.node ?? ''), 'within the range the package itself supports')
  const tree = dependencyTree(root, ['dependencies', 'optionalDependencies', 'devDependencies'])
  t.ok(tree.size > 100, `the walk reaches the development tree (${tree.size} packages)`)
  t.same(narrower(tree, wanted), [], 'no installed package asks for more, so npm warns about no engine')
})

/** The packages of `tree` whose `engines.node` leaves out part of `range`. */
function narrower (tree: Map<string, string | undefined>, range: string): string[] {
  return [...tree].flatMap(([id, engine]) => engine === undefined || semver.subset(range, engine) ? [] : [`${id} wants Node ${engine}`])
}

/**
 * The installed packages a package depends on (`name@version` → its `engines.node`), found as Node
 * finds them: in the nearest `node_modules` folder up from the dependent.
 */
function dependencyTree (from: string, fields: ReadonlyArray<keyof Dependencies>): Map<string, string | undefined> {
  const found = new Map<string, string | undefined>()
  const visit = (dir: string, fields: ReadonlyArray<keyof Dependencies>): void => {
    const manifest = readManifest(dir)
    for (const name of fields.flatMap(field => Object.keys(manifest[field] ?? {}))) {
      const location = lookup(dir, name)
      if (location === undefined) continue // an optional dependency for another platform
      const dep = readManifest(location)
      const id = `${name}@${dep.version}`
      if (found.has(id)) continue
      found.set(id, dep.engines?.node)
      visit(location, ['dependencies', 'optionalDependencies'])
    }
  }
  visit(from, fields)
  return found
}

interface Dependencies {
  dependencies?: Record<string, string>
  optionalDependencies?: Record<string, string>
  devDependencies?: Record<string, string>
}

interface Manifest extends Dependencies {
  version: string
  engines?: { node?: string }
  devEngines?: { runtime?: { version?: string } }
}

function readManifest (dir: string): Manifest {
  return JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Manifest
}

function lookup (from: string, name: string): string | undefined {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name)
    if (existsSync(join(candidate, 'package.json'))) return candidate
    if (dirname(dir) === dir) return undefined
  }
}
