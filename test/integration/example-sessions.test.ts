/**
 * The example app's sessions, through its real HTTP routes and a real socket: a tab's socket
 * closes with 4001 when its session ends, by signing out or by signing in again (as someone else,
 * in another tab), rather than go on as the user who left.
 */
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { exampleApp, signIn } from '../helpers/example-app.js'

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
