/**
 * The client's browser bundle stays within its budget: under 5 KB minified and gzipped, measured
 * the way `npm run size` prints it (esbuild bundles lib/client/ as an app's bundler would). A size
 * budget, not a timing. Also: the bundle pulls in nothing from the server's side.
 */
import t from 'tap'
import { build } from 'esbuild'
import { fileURLToPath } from 'node:url'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
// @ts-expect-error a plain ES module script, without declarations
import { clientSize, BUDGET } from '../../bench/client-size.js'

t.test('fastify-channels/client is under 5 KB gzipped', async t => {
  const size = await clientSize() as { minified: number, gzipped: number }
  t.equal(BUDGET, 5 * 1024)
  t.ok(size.gzipped < BUDGET, `${size.gzipped} bytes gzipped (${size.minified} minified)`)
})

t.test('the bundle holds only the client\'s own files', async t => {
  const entry = fileURLToPath(new URL('../../lib/client/index.ts', import.meta.url))
  const result = await build({ entryPoints: [entry], bundle: true, write: false, metafile: true, platform: 'browser', format: 'esm', logLevel: 'silent' })
  t.same(Object.keys(result.metafile.inputs).sort(), ['lib/client/calls.ts', 'lib/client/client.ts', 'lib/client/errors.ts', 'lib/client/index.ts', 'lib/client/options.ts', 'lib/client/position.ts', 'lib/client/reconnecting-socket.ts', 'lib/client/subscription.ts'],
    'no server module and no dependency is bundled')
})

t.test('no file of the client imports anything outside lib/client/ at run time: dist/client/ is served as plain ES modules', async t => {
  const dir = fileURLToPath(new URL('../../lib/client/', import.meta.url))
  const outside: string[] = []
  for (const file of readdirSync(dir).filter(name => name.endsWith('.ts'))) {
    for (const line of readFileSync(join(dir, file), 'utf8').split('\n')) {
      if (/^(import|export) (?!type )[^'"]*from '\.\.\//.test(line)) outside.push(`${file}: ${line}`)
    }
  }
  t.same(outside, [], 'only type imports reach outside it')
})
