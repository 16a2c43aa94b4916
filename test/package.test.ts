/**
 * The package as an app loads it by name: every entry point through `import`, and through
 * `require()` where Node can load an ES module with it (20.19 and later, 22.12 and later); before
 * that, `require()` fails with Node's own clear error, and `import()` is the way in.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const entries = ['fastify-channels', 'fastify-channels/testing', 'fastify-channels/client']
// What each entry point must export, as an app uses it.
const probe = 'm => [typeof m.default, typeof m.JsonWebsocketConsumer, typeof m.WebsocketCommunicator, typeof m.ChannelsClient]'

/** Runs `code` in a child Node in the package's root (where its name resolves to itself). */
function run (code: string, type: 'module' | 'commonjs'): string {
  return execFileSync(process.execPath, [`--input-type=${type}`, '--no-warnings', '-e', code], { cwd: root, encoding: 'utf8' }).trim()
}

const expected = JSON.stringify([
  ['function', 'function', 'undefined', 'undefined'],
  ['undefined', 'undefined', 'function', 'undefined'],
  ['undefined', 'undefined', 'undefined', 'function']
])

t.test('every entry point loads by name with import', async t => {
  const out = run(`const probe = ${probe}; console.log(JSON.stringify(await Promise.all(${JSON.stringify(entries)}.map(async e => probe(await import(e))))))`, 'module')
  t.equal(out, expected)
})

t.test('require() loads every entry point where Node can require an ES module; else Node says why', async t => {
  const code = `const probe = ${probe}
try { console.log(JSON.stringify(${JSON.stringify(entries)}.map(e => probe(require(e))))) } catch (err) { console.log(err.code) }`
  const out = run(code, 'commonjs')
  if ((process.features as { require_module?: boolean }).require_module === true) t.equal(out, expected)
  else t.equal(out, 'ERR_REQUIRE_ESM')
})
