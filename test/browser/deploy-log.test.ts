/**
 * The example app's read-only deploy log (/deploy-log.html) in Debian's Chromium: an EventSource
 * on an AsyncHttpConsumer. A signed-in page follows a deploy to 100% while the server ends its
 * stream every second (DEPLOY_LOG_MAX_AGE), so the browser reconnects with Last-Event-ID again and
 * again: every log line must still be there exactly once, in order. A page that is not signed in
 * gets the route hook's 401 and says so. Then the server restarts: its in-memory history is gone,
 * and the page starts over (a `reset`) and follows the next deploy.
 */
import t from 'tap'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Browser, BrowserContext, Page } from 'playwright-core'
import { freePort, type NodeProcess } from '../helpers/process.js'
import { ensureBuilt } from '../helpers/dist.js'
import { inCI, launchChromium, noChromium, screenshots, startExampleApp } from '../helpers/browser.js'

const WAIT = 15_000
t.setTimeout(180_000)

/**
 * Starts a deploy the way the main page does, over its WebSocket (`/ws/deploy`): the one place
 * this test depends on how the main page starts deploys.
 */
async function startDeploy (page: Page, servers: number): Promise<void> {
  const host = new URL(page.url()).host
  // The example's main socket speaks GroupsConsumer's protocol: one call of its `deploy` action.
  await page.evaluate(async ({ host, count }) => {
    const socket = new WebSocket(`ws://${host}/ws/app`)
    await new Promise<void>((resolve, reject) => {
      socket.onopen = () => { socket.send(JSON.stringify({ op: 'call', id: 1, action: 'deploy', args: { servers: count } })) }
      socket.onmessage = event => {
        const frame = JSON.parse(String(event.data)) as { op: string, id?: number, error?: { message: string } }
        if (frame.op !== 'reply' || frame.id !== 1) return
        socket.close()
        if (frame.error === undefined) resolve()
        else reject(new Error(`the deploy was refused: ${frame.error.message}`))
      }
      socket.onerror = () => reject(new Error('the deploy socket failed'))
    })
  }, { host, count: servers })
}

/** The log lines on the page: each line's group offset. */
async function offsets (page: Page): Promise<number[]> {
  return await page.locator('#log .line').evaluateAll(lines => lines.map(line => Number(line.getAttribute('data-offset'))))
}

if (noChromium !== undefined && inCI) {
  t.fail(`${noChromium}: CI must run the browser test, never skip it`)
} else {
  t.test('the deploy log over server-sent events, in a real browser', { skip: noChromium ?? false }, async t => {
    await ensureBuilt()
    mkdirSync(screenshots, { recursive: true })
    const data = mkdtempSync(join(tmpdir(), 'fastify-channels-deploy-log-'))
    const port = await freePort()
    const base = `http://127.0.0.1:${port}`
    const env = { PORT: String(port), HOST: '127.0.0.1', SESSION_FILE: join(data, 'sessions.json'), REDIS_URL: '', DEPLOY_LOG_MAX_AGE: '1' }
    let server: NodeProcess = await startExampleApp(env)
    const browser: Browser = await launchChromium()
    t.teardown(async () => {
      await browser.close()
      await server.stop()
      rmSync(data, { recursive: true, force: true })
    })
    const pageErrors: string[] = []
    const open = async (context: BrowserContext): Promise<Page> => {
      const page = await context.newPage()
      page.setDefaultTimeout(WAIT)
      page.on('pageerror', err => pageErrors.push(err.message))
      await page.goto(`${base}/deploy-log.html`)
      return page
    }

    // Not signed in: the route's preHandler answers 401 and no consumer is made.
    const stranger = await open(await browser.newContext())
    await stranger.locator('#state[data-state="closed"]').waitFor()
    t.equal(await stranger.locator('#signin-hint').isVisible(), true, 'a page that is not signed in says so')

    // Signed in over HTTP (the sign-in form's POST), in the page's own cookie jar.
    const context = await browser.newContext({ viewport: { width: 1100, height: 760 }, deviceScaleFactor: 1 })
    const signIn = await context.request.post(`${base}/login`, { form: { name: 'Ada' }, maxRedirects: 0 })
    t.equal(signIn.status(), 303, 'signed in')
    const page = await open(context)
    await page.locator('#state[data-state="open"]').waitFor()
    t.pass('the EventSource opened')

    await startDeploy(page, 8)
    await page.locator('.job[data-status="succeeded"][data-pct="100"]').waitFor({ timeout: 30_000 })
    const reconnects = Number(await page.locator('#reconnects').textContent())
    t.ok(reconnects >= 1, `the stream was ended and resumed ${reconnects} times while the deploy ran`)
    t.same(await offsets(page), [1, 2, 3, 4, 5, 6, 7, 8, 9], 'the start and eight servers: every line once, in order, across the reconnects')
    t.match(await page.locator('#log .line').last().textContent(), /healthy/)
    t.equal(await page.locator('#reset-note').isVisible(), false, 'never started over')
    await page.screenshot({ path: join(screenshots, 'deploy-log-01-done.png'), animations: 'disabled' })

    // A restart loses the in-memory history: the page reconnects, is told to start over, and goes on.
    t.equal(await server.stop(), 0, 'the server shuts down cleanly')
    // From here streams stay open (DEPLOY_LOG_MAX_AGE 0): only a sign-out, below, ends this one.
    server = await startExampleApp({ ...env, DEPLOY_LOG_MAX_AGE: '0' })
    await page.locator('#reset-note').waitFor({ timeout: 30_000 })
    await page.locator('#state[data-state="open"]').waitFor()
    t.equal(await page.locator('#log .line').count(), 0, 'the old log is cleared')
    await startDeploy(page, 2)
    await page.locator('.job[data-status="succeeded"][data-pct="100"]').waitFor({ timeout: 30_000 })
    t.same(await offsets(page), [1, 2, 3], 'the next deploy is followed from the new history')
    await page.screenshot({ path: join(screenshots, 'deploy-log-02-after-restart.png'), animations: 'disabled' })

    // Signing out (in any tab) ends the open stream: the browser's reconnect gets the 401.
    const signOut = await context.request.post(`${base}/logout`, { maxRedirects: 0 })
    t.equal(signOut.status(), 303, 'signed out')
    await page.locator('#state[data-state="closed"]').waitFor({ timeout: 30_000 })
    t.equal(await page.locator('#signin-hint').isVisible(), true, 'the open page stops and says it is not signed in')
    t.same(pageErrors, [], 'no script errors')
  })
}
