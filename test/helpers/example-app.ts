/** The example app as its integration tests run it: one process on the in-memory layer, and its sign-in. */
import type { Test } from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startExampleApp } from './browser.js'
import { freePort } from './process.js'

/** Starts the example app on the in-memory layer, with a session file of its own; its base URL. Stopped when `t` ends. */
export async function exampleApp (t: Test): Promise<string> {
  const data = mkdtempSync(join(tmpdir(), 'fastify-channels-example-'))
  const port = await freePort()
  const proc = await startExampleApp({ SESSION_FILE: join(data, 'sessions.json'), REDIS_URL: '', PORT: String(port), HOST: '127.0.0.1' })
  t.teardown(async () => {
    await proc.stop()
    rmSync(data, { recursive: true, force: true })
  })
  return `http://127.0.0.1:${port}`
}

/** POSTs the sign-in form (with `cookie`, if any): the session cookie it sets. */
export async function signIn (base: string, name: string, cookie?: string): Promise<string> {
  const response = await fetch(`${base}/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...(cookie === undefined ? {} : { cookie }) },
    body: new URLSearchParams({ name }).toString()
  })
  const set = response.headers.get('set-cookie')
  if (response.status !== 303 || set === null) throw new Error(`sign-in answered ${response.status}`)
  return set.split(';')[0]
}
