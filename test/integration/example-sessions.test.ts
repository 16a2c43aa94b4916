/**
 * The example app's sessions, through its real HTTP routes and a real socket: a tab's socket
 * closes with 4001 when its session ends, by signing out or by signing in again (as someone else,
 * in another tab), rather than go on as the user who left.
 */
import t, { type Test } from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import WebSocket from 'ws'
import { startExampleApp } from '../helpers/browser.js'
import { freePort } from '../helpers/process.js'

async function exampleApp (t: Test): Promise<string> {
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
async function signIn (base: string, name: string, cookie?: string): Promise<string> {
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

/** The app's socket, open; `closed` says how it closed, or 'still open' after 5 s. */
async function tab (t: Test, base: string, cookie: string): Promise<{ closed: () => Promise<unknown> }> {
  const ws = new WebSocket(`${base.replace('http', 'ws')}/ws/app`, { headers: { cookie, origin: base } })
  t.teardown(() => { ws.terminate() })
  const ended = new Promise(resolve => ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })))
  await new Promise<void>((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  return { closed: async () => await Promise.race([ended, new Promise(resolve => setTimeout(resolve, 5000, 'still open').unref())]) }
}

t.test('signing in again ends the session before it: its other tabs close with 4001, as on sign-out', async t => {
  const base = await exampleApp(t)
  const ada = await signIn(base, 'Ada')
  const adasTab = await tab(t, base, ada)
  await signIn(base, 'Eve', ada)
  t.same(await adasTab.closed(), { code: 4001, reason: 'signed out' }, 'the tab opened as Ada closes instead of going on as Ada')

  const eve = await signIn(base, 'Eve')
  const evesTab = await tab(t, base, eve)
  const out = await fetch(`${base}/logout`, { method: 'POST', redirect: 'manual', headers: { cookie: eve } })
  t.equal(out.status, 303)
  t.same(await evesTab.closed(), { code: 4001, reason: 'signed out' }, 'signing out closes the session\'s tabs')
})
