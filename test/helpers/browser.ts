/**
 * What the browser tests share: Debian's Chromium driven by playwright-core (never a downloaded
 * browser), whether a test may run here, and the example app started as a user starts it.
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser } from 'playwright-core'
import { spawnNode, type NodeProcess } from './process.js'

const root = fileURLToPath(new URL('../../', import.meta.url))

export const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

/** Where browser tests save screenshots (git-ignored). */
export const screenshots = fileURLToPath(new URL('../browser/screenshots/', import.meta.url))

export const inCI = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false' && process.env.CI !== '0'

/**
 * Why the browser tests cannot run here, or undefined. A test skips for it, except under CI, where
 * it fails instead: CI must run the browser tests.
 */
export const noChromium = existsSync(chromiumPath) ? undefined : `Chromium not found at ${chromiumPath} (apt-get install chromium)`

export async function launchChromium (): Promise<Browser> {
  return await chromium.launch({
    executablePath: chromiumPath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    timeout: 30_000
  })
}

/** `node example-app/server.js` with `env`; resolves once it listens. */
export async function startExampleApp (env: Record<string, string>): Promise<NodeProcess> {
  const server = spawnNode([join(root, 'example-app/server.js')], env, root)
  await server.waitFor(/fastify-channels example on http/, 30_000)
  return server
}
