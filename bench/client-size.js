#!/usr/bin/env node
// The browser bundle of `fastify-channels/client`: bundled and minified by esbuild, as an app's
// bundler would, then gzipped. Prints the sizes; exits 1 above the 5 KB budget.
//   npm run size            (--json prints one JSON line instead)
import { build } from 'esbuild'
import { gzipSync } from 'node:zlib'
import { fileURLToPath } from 'node:url'

export const BUDGET = 5 * 1024

const entry = fileURLToPath(new URL('../lib/client/index.ts', import.meta.url))

export async function clientSize () {
  const result = await build({
    entryPoints: [entry], bundle: true, minify: true, format: 'esm', platform: 'browser', target: 'es2022', write: false, logLevel: 'silent'
  })
  const code = result.outputFiles[0].contents
  return { minified: code.length, gzipped: gzipSync(code, { level: 9 }).length, budget: BUDGET }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const size = await clientSize()
  if (process.argv.includes('--json')) console.log(JSON.stringify(size))
  else console.log(`fastify-channels/client: ${size.minified} bytes minified, ${size.gzipped} bytes gzipped (budget ${size.budget})`)
  if (size.gzipped > BUDGET) process.exit(1)
}
