/**
 * The client's browser bundle stays within its budget: under 5 KB minified and gzipped, measured
 * the way `npm run size` prints it (esbuild bundles lib/client/ as an app's bundler would). A size
 * budget, not a timing. Also: the bundle pulls in nothing from the server's side.
 */
import t from 'tap'
import { build } from 'esbuild'
import { fileURLToPath } from 'node:url'
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
  // lib/protocol.ts is the wire protocol both sides speak (its one check, a position's, included).
  t.same(Object.keys(result.metafile.inputs).sort(), ['lib/client/calls.ts', 'lib/client/client.ts', 'lib/client/errors.ts', 'lib/client/index.ts', 'lib/client/options.ts', 'lib/client/reconnecting-socket.ts', 'lib/client/subscription.ts', 'lib/protocol.ts'],
    'no server module and no dependency is bundled')
})
