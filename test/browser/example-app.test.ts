/**
 * The example app in Debian's Chromium, driven by playwright-core: two people sign in, chat, watch
 * the clock, run two deploys at once, and stay connected across a server restart.
 * Screenshots land in test/browser/screenshots/ (git-ignored).
 */
import t from 'tap'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Browser, Page } from 'playwright-core'
import { freePort, type NodeProcess } from '../helpers/process.js'
import { ensureBuilt } from '../helpers/dist.js'
import { inCI, launchChromium, noChromium, screenshots as shots, startExampleApp } from '../helpers/browser.js'

const WAIT = 15_000
// A browser, two server starts and a reconnect backoff: more than .taprc's 120 s on a busy machine. Every wait below is bounded.
t.setTimeout(240_000)

if (noChromium !== undefined && inCI) {
  t.fail(`${noChromium}: CI must run the browser test, never skip it`)
} else {
  t.test('the example app in a real browser', { skip: noChromium ?? false }, async t => {
    await ensureBuilt() // the example app imports the built package, as a user's app would
    mkdirSync(shots, { recursive: true })
    const data = mkdtempSync(join(tmpdir(), 'fastify-channels-example-'))
    const port = await freePort()
    const url = `http://127.0.0.1:${port}/`
    const env = { PORT: String(port), HOST: '127.0.0.1', SESSION_FILE: join(data, 'sessions.json'), REDIS_URL: '' }
    const startServer = async (): Promise<NodeProcess> => await startExampleApp(env)

    let server = await startServer()
    const browser: Browser = await launchChromium()
    t.teardown(async () => {
      await browser.close()
      await server.stop()
      rmSync(data, { recursive: true, force: true })
    })

    const pageErrors: string[] = []
    const openPage = async (): Promise<Page> => {
      // One context per person: separate cookies, separate sessions.
      const context = await browser.newContext({ viewport: { width: 1280, height: 820 }, deviceScaleFactor: 1 })
      const page = await context.newPage()
      page.setDefaultTimeout(WAIT)
      page.on('pageerror', err => pageErrors.push(err.message))
      await page.goto(url)
      return page
    }
    const signIn = async (page: Page, name: string): Promise<void> => {
      await page.locator('#signin-name').fill(name)
      await page.locator('#signin-form button[type=submit]').click()
      await page.locator('#user-name', { hasText: name }).waitFor()
      await page.locator('#conn[data-state="connected"]').waitFor()
    }
    const say = async (page: Page, text: string): Promise<void> => {
      await page.locator('#chat-input').fill(text)
      await page.locator('#chat-send').click()
    }
    const message = (page: Page, author: string, text: string) =>
      page.locator('#messages .message', { has: page.locator('.author', { hasText: author }) }).filter({ hasText: text })

    const ada = await openPage()
    await ada.locator('#signin-form').waitFor()
    await ada.screenshot({ path: join(shots, '01-sign-in.png'), animations: 'disabled' })
    await signIn(ada, 'Ada')
    t.equal(await ada.locator('#conn-text').textContent(), 'Connected', 'the page says it is connected')

    const grace = await openPage()
    await signIn(grace, 'Grace')
    await ada.locator('#messages .notice', { hasText: 'Grace joined' }).waitFor()
    t.pass('Ada sees Grace join the lobby')

    // A Django client writes routes with a trailing slash; the example serves that form too.
    const slashed = await grace.evaluate(async (address) => {
      const socket = new WebSocket(address)
      const frames: unknown[] = []
      await new Promise<void>((resolve, reject) => {
        socket.onmessage = (event) => {
          const frame = JSON.parse(event.data as string) as { type: string }
          frames.push(frame)
          if (frame.type === 'hello') socket.send(JSON.stringify({ text: 'Sent on /ws/chat/lobby/' }))
          if (frame.type === 'message') resolve()
        }
        socket.onclose = (event) => reject(new Error(`closed with ${event.code}`))
        setTimeout(() => reject(new Error('no reply within 5 s')), 5000)
      })
      socket.onclose = null
      socket.close()
      return frames
    }, `ws://127.0.0.1:${port}/ws/chat/lobby/`)
    t.match(slashed, [{ type: 'hello', room: 'lobby', user: 'Grace' }, { type: 'message', user: 'Grace', text: 'Sent on /ws/chat/lobby/' }],
      'a socket to /ws/chat/lobby/ joins the lobby like /ws/chat/lobby')
    await message(ada, 'Grace', 'Sent on /ws/chat/lobby/').waitFor()
    t.pass('and the others in the lobby get what it sends')

    await say(ada, 'Hello Grace! Deploying the new build in a minute.')
    await message(grace, 'Ada', 'Hello Grace!').waitFor()
    await say(grace, 'Hi Ada — go ahead, I am watching the clock.')
    await message(ada, 'Grace', 'go ahead').waitFor()
    t.pass('messages travel both ways, with the author\'s name')
    t.equal(await message(ada, 'Ada', 'Hello Grace!').getAttribute('class'), 'message mine', 'own messages are marked as such')

    const firstTick = await ada.locator('#clock-time').textContent()
    await ada.waitForFunction(`document.getElementById('clock-time').textContent !== ${JSON.stringify(firstTick)}`, undefined, { timeout: 5000 })
    t.match(await ada.locator('#clock-time').textContent(), /\d{1,2}:\d{2}:\d{2}/, 'the clock ticks')

    // Two deploys at once, one started by each person; the page stays usable meanwhile.
    await ada.locator('#deploy-servers').fill('5')
    await ada.locator('#deploy-start').click()
    await grace.locator('#deploy-servers').fill('3')
    await grace.locator('#deploy-start').click()
    await ada.locator('.job[data-status="running"]').nth(1).waitFor()
    await say(grace, 'Chat still works while the deploys run.')
    await message(ada, 'Grace', 'still works').waitFor()
    await ada.screenshot({ path: join(shots, '02-deploys-running.png'), animations: 'disabled' })
    await ada.locator('.job[data-status="succeeded"][data-pct="100"]').nth(1).waitFor({ timeout: 30_000 })
    t.equal(await ada.locator('.job').count(), 2, 'both deploys are shown')
    t.match(await ada.locator('.job .bar-fill').first().getAttribute('style'), /width: 100%/, 'the progress bar is full')
    t.ok(await ada.locator('#deploy-log .log-line', { hasText: 'healthy' }).count() >= 8, 'the log shows every server')
    await grace.locator('.job[data-status="succeeded"][data-pct="100"]').nth(1).waitFor()
    t.pass('both deploys reach 100% on both pages')
    await ada.screenshot({ path: join(shots, '03-deploys-done.png'), animations: 'disabled' })
    await grace.screenshot({ path: join(shots, '04-second-user.png'), animations: 'disabled' })

    // Restart the server on the same port: the page notices, says so, and comes back by itself.
    t.equal(await server.stop(), 0, 'the server shuts down cleanly')
    await ada.locator('#conn[data-state="reconnecting"]').waitFor()
    await ada.screenshot({ path: join(shots, '05-reconnecting.png'), animations: 'disabled' })
    server = await startServer()
    await ada.locator('#conn[data-state="connected"]').waitFor({ timeout: 30_000 })
    await grace.locator('#conn[data-state="connected"]').waitFor({ timeout: 30_000 })
    t.pass('both pages reconnect after the restart')
    await say(ada, 'Back after the restart.')
    await message(grace, 'Ada', 'Back after the restart.').waitFor()
    t.pass('and the chat works again, still signed in')
    await ada.screenshot({ path: join(shots, '06-reconnected.png'), animations: 'disabled' })

    t.same(pageErrors, [], 'no script errors in the pages')
  })
}
