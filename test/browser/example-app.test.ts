/**
 * The example app in Debian's Chromium, driven by playwright-core: two people sign in, see who is
 * in the room, chat, watch the clock, run two deploys at once; a page that goes offline and online
 * again, and pages whose server restarts (in memory, then on Redis, a real process each time), miss
 * no chat line and show none twice. Screenshots land in test/browser/screenshots/ (git-ignored).
 */
import t, { type Test } from 'tap'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Browser, BrowserContext, ConsoleMessage, Page } from 'playwright-core'
import { freePort, type NodeProcess } from '../helpers/process.js'
import { ensureBuilt } from '../helpers/dist.js'
import { inCI, launchChromium, noChromium, screenshots as shots, startExampleApp } from '../helpers/browser.js'
import { REDIS_URL, adminClient, deleteKeysOf, requireRedis, uniquePrefix } from '../helpers/redis.js'
import { requireNginx, startNginx } from '../helpers/nginx.js'

const WAIT = 15_000
// A browser, several server starts and reconnect backoffs: more than .taprc's 120 s on a busy machine. Every wait below is bounded.
t.setTimeout(300_000)

/** One example server process; `restart()` stops it (SIGTERM) and starts it again on the same port. */
interface ExampleServer { url: string, port: number, proc: NodeProcess }

async function startServer (env: Record<string, string>, port: number): Promise<ExampleServer> {
  const proc = await startExampleApp({ ...env, PORT: String(port), HOST: '127.0.0.1' })
  return { url: `http://127.0.0.1:${port}/`, port, proc }
}

interface Person { page: Page, context: BrowserContext }

async function person (t: Test, browser: Browser, url: string, name: string, errors: string[]): Promise<Person> {
  // One context per person: separate cookies, separate sessions.
  const context = await browser.newContext({ viewport: { width: 1280, height: 820 }, deviceScaleFactor: 1 })
  t.teardown(() => context.close())
  const page = await context.newPage()
  page.setDefaultTimeout(WAIT)
  page.on('pageerror', err => errors.push(`${name}: ${err.message}`))
  await page.goto(url)
  await page.locator('#signin-name').fill(name)
  await page.locator('#signin-form button[type=submit]').click()
  await page.locator('#user-name', { hasText: name }).waitFor()
  await connected(page)
  return { page, context }
}

const connected = (page: Page, timeout = WAIT): Promise<void> => page.locator('#conn[data-state="connected"]').waitFor({ timeout })

async function say (page: Page, text: string): Promise<void> {
  await page.locator('#chat-input').fill(text)
  await page.locator('#chat-send').click()
}

const message = (page: Page, author: string, text: string) =>
  page.locator('#messages .message', { has: page.locator('.author', { hasText: author }) }).filter({ hasText: text })

/** The chat lines a page shows, in order. */
async function lines (page: Page): Promise<string[]> {
  return await page.locator('#messages .message .text').allTextContents()
}

/** Waits until `page` shows `text`, then checks it is there exactly once. */
async function shownOnce (t: Test, page: Page, author: string, text: string): Promise<void> {
  await message(page, author, text).first().waitFor({ timeout: 30_000 })
  t.equal(await message(page, author, text).count(), 1, `"${text}" shown once`)
}


if (noChromium !== undefined && inCI) {
  t.fail(`${noChromium}: CI must run the browser test, never skip it`)
} else {
  t.test('the example app in a real browser', { skip: noChromium ?? false }, async t => {
    await ensureBuilt() // the example app imports the built package, as a user's app would
    mkdirSync(shots, { recursive: true })
    const data = mkdtempSync(join(tmpdir(), 'fastify-channels-example-'))
    const env = { SESSION_FILE: join(data, 'sessions.json'), REDIS_URL: '' }
    const port = await freePort()
    let server = await startServer(env, port)
    const browser = await launchChromium()
    t.teardown(async () => {
      await browser.close()
      await server.proc.stop()
      rmSync(data, { recursive: true, force: true })
    })
    const errors: string[] = []

    const first = await browser.newContext({ viewport: { width: 1280, height: 820 }, deviceScaleFactor: 1 })
    const signIn = await first.newPage()
    await signIn.goto(server.url)
    await signIn.locator('#signin-form').waitFor()
    await signIn.screenshot({ path: join(shots, '01-sign-in.png'), animations: 'disabled' })
    await first.close()

    const { page: ada, context: adaContext } = await person(t, browser, server.url, 'Ada', errors)
    t.equal(await ada.locator('#conn-text').textContent(), 'Connected', 'the page says it is connected')
    const { page: grace, context: graceContext } = await person(t, browser, server.url, 'Grace', errors)
    await ada.locator('#messages .notice', { hasText: 'Grace joined' }).waitFor()
    await ada.locator('#presence .person', { hasText: 'Grace' }).waitFor()
    t.same((await ada.locator('#presence .person').allTextContents()).map(s => s.slice(1)), ['Ada', 'Grace'], 'the room shows who is in it')

    // Someone else who calls herself Ada is someone else: listed apart, her lines not shown as this Ada's own.
    const { page: otherAda, context: otherAdaContext } = await person(t, browser, server.url, 'Ada', errors)
    await ada.locator('#messages .notice', { hasText: 'Ada joined' }).waitFor()
    t.same((await ada.locator('#presence .person').allTextContents()).map(s => s.slice(1)), ['Ada', 'Ada', 'Grace'], 'two people named Ada are two people')
    await say(otherAda, 'I am the other Ada')
    await message(ada, 'Ada', 'I am the other Ada').waitFor()
    t.equal(await ada.locator('#messages .message.mine', { hasText: 'I am the other Ada' }).count(), 0, 'her line is not marked as this Ada\'s own')
    t.equal(await otherAda.locator('#messages .message.mine', { hasText: 'I am the other Ada' }).count(), 1, 'but it is on her page')
    await otherAdaContext.close()
    await ada.locator('#messages .notice', { hasText: 'Ada left' }).waitFor()
    t.same((await ada.locator('#presence .person').allTextContents()).map(s => s.slice(1)), ['Ada', 'Grace'], 'when she leaves, this Ada is still listed')

    // Any client can speak the protocol from the README; Django's trailing slash is served too.
    const spoken = await grace.evaluate(async (address) => {
      const socket = new WebSocket(address)
      const frames: unknown[] = []
      await new Promise<void>((resolve, reject) => {
        socket.onopen = () => socket.send(JSON.stringify({ op: 'join', group: 'room.lobby' }))
        socket.onmessage = (event) => {
          const frame = JSON.parse(event.data as string) as { op: string }
          frames.push(frame)
          if (frame.op === 'joined') socket.send(JSON.stringify({ op: 'call', id: 1, action: 'post', args: { room: 'lobby', text: 'Sent by hand on /ws/app/' } }))
          if (frame.op === 'message') resolve()
        }
        socket.onclose = (event) => reject(new Error(`closed with ${event.code}`))
        setTimeout(() => reject(new Error('no message within 5 s')), 5000)
      })
      socket.onclose = null
      socket.close()
      return frames.filter(f => (f as { op: string }).op !== 'presence')
    }, `ws://127.0.0.1:${port}/ws/app/`)
    t.match(spoken, [
      { op: 'joined', group: 'room.lobby', recovered: false },
      { op: 'reply', id: 1, result: { offset: Number } },
      { op: 'message', group: 'room.lobby', offset: Number, data: { type: 'chat.message', user: 'Grace', text: 'Sent by hand on /ws/app/' } }
    ], 'a hand-written socket on /ws/app/ joins, calls and gets the message')
    await shownOnce(t, ada, 'Grace', 'Sent by hand on /ws/app/')

    await say(ada, 'Hello Grace! Deploying the new build in a minute.')
    await shownOnce(t, grace, 'Ada', 'Hello Grace!')
    await say(grace, 'Hi Ada — go ahead, I am watching the clock.')
    await shownOnce(t, ada, 'Grace', 'go ahead')
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
    await shownOnce(t, ada, 'Grace', 'still works')
    await ada.screenshot({ path: join(shots, '02-deploys-running.png'), animations: 'disabled' })
    // Ada reloads while the deploys run: her page reads their progress back from the history and
    // merges it with what comes live, so it ends with Grace's log, line for line.
    await ada.reload()
    await connected(ada, 30_000)
    await ada.locator('.job[data-status="succeeded"][data-pct="100"]').nth(1).waitFor({ timeout: 30_000 })
    t.equal(await ada.locator('.job').count(), 2, 'both deploys are shown')
    t.match(await ada.locator('.job .bar-fill').first().getAttribute('style'), /width: 100%/, 'the progress bar is full')
    t.ok(await ada.locator('#deploy-log .log-line', { hasText: 'healthy' }).count() >= 8, 'the log shows every server')
    await grace.locator('.job[data-status="succeeded"][data-pct="100"]').nth(1).waitFor()
    t.pass('both deploys reach 100% on both pages')
    t.same(await ada.locator('#deploy-log .log-line').allTextContents(), await grace.locator('#deploy-log .log-line').allTextContents(),
      'the page reloaded mid-deploy shows the same log as the page that was there all along')
    await ada.screenshot({ path: join(shots, '03-deploys-done.png'), animations: 'disabled' })
    const metrics = await (await fetch(new URL('/metrics', server.url))).text()
    t.match(metrics, /fastify_channels_connections\{route="\/ws\/app"\} 2\b/, '/metrics: the two pages are the two open connections')
    t.match(metrics, /fastify_channels_group_sends_total \d+/, '/metrics: group sends are counted')

    // A reload shows the deploys again, read back from the group's history: the same cards and the
    // same log, each line once and in order, though no deploy sends anything more.
    const logBefore = await ada.locator('#deploy-log .log-line').allTextContents()
    await ada.reload()
    await connected(ada, 30_000)
    await ada.locator('.job[data-status="succeeded"][data-pct="100"]').nth(1).waitFor()
    t.equal(await ada.locator('.job').count(), 2, 'after a reload, both deploys are shown, done')
    t.same(await ada.locator('#deploy-log .log-line').allTextContents(), logBefore, 'after a reload, the deploy log is the same, line for line')

    // Grace's page goes offline; Ada goes on talking; back online, Grace has every line, once.
    const consoleErrors: string[] = []
    const onConsole = (message: ConsoleMessage): void => { if (message.type() === 'error') consoleErrors.push(message.text()) }
    grace.on('console', onConsole)
    await graceContext.setOffline(true)
    await grace.locator('#conn[data-state="reconnecting"]').waitFor()
    t.pass('offline: the page says it is reconnecting')
    for (let i = 1; i <= 3; i++) {
      await say(ada, `While you were offline, line ${i}`)
      await shownOnce(t, ada, 'Ada', `While you were offline, line ${i}`)
    }
    await grace.waitForTimeout(3000) // several retries' worth of backoff
    grace.off('console', onConsole)
    t.same(consoleErrors, [], 'offline, the page makes no request that can only fail (a WebSocket attempt, its sign-in check): no error in the console')
    await grace.screenshot({ path: join(shots, '04-offline.png'), animations: 'disabled' })
    await graceContext.setOffline(false)
    await connected(grace, 30_000)
    for (let i = 1; i <= 3; i++) await shownOnce(t, grace, 'Ada', `While you were offline, line ${i}`)
    t.same(await lines(grace), await lines(ada), 'back online, Grace\'s page shows exactly Ada\'s lines, in order')
    await grace.screenshot({ path: join(shots, '05-back-online.png'), animations: 'disabled' })

    // Restart the server on the same port: the pages notice, say so, and come back by themselves.
    t.equal(await server.proc.stop(), 0, 'the server shuts down cleanly')
    await ada.locator('#conn[data-state="reconnecting"]').waitFor()
    await ada.screenshot({ path: join(shots, '06-reconnecting.png'), animations: 'disabled' })
    server = await startServer(env, port)
    await connected(ada, 30_000)
    await connected(grace, 30_000)
    t.pass('both pages reconnect after the restart')
    await say(ada, 'Back after the restart.')
    await shownOnce(t, grace, 'Ada', 'Back after the restart.')
    t.pass('and the chat works again, still signed in')
    t.same(await lines(grace), await lines(ada), 'no line shown twice on either page')
    await ada.screenshot({ path: join(shots, '07-reconnected.png'), animations: 'disabled' })

    // A room name the server would not take is changed, and the page says so.
    await grace.locator('#room-input').fill('Café Talk')
    await grace.locator('#room-input').press('Enter')
    await grace.locator('#rooms .room.active', { hasText: '#caf-talk' }).waitFor()
    await grace.locator('#messages .notice', { hasText: '"Café Talk" is #caf-talk' }).waitFor()
    t.pass('a room name with other characters is joined as the name it became, and the page says which')

    // A line of only spaces is not sent, and the page says why.
    const before = await lines(grace)
    await say(grace, '   ')
    await grace.locator('#messages .notice', { hasText: 'the message has only spaces' }).waitFor()
    t.same(await lines(grace), before, 'a line of only spaces is not sent: the page says so')

    // Signing in again in Ada's browser, as someone else (another tab: the same cookies), ends her
    // session: her open page shows the sign-in, instead of going on as the new user.
    const again = await adaContext.request.post(new URL('/login', server.url).href, { form: { name: 'Bob' }, maxRedirects: 0 })
    t.equal(again.status(), 303, 'signed in again as Bob')
    await ada.locator('#signin-view').waitFor()
    t.match(await ada.locator('#signin-error').textContent(), /session ended/, 'the open page says her session ended')

    t.same(errors, [], 'no script errors in the pages')
  })

  t.test('on Redis: a page whose server process restarts misses nothing and repeats nothing', { skip: noChromium ?? false }, async t => {
    if (!await requireRedis(t)) return
    await ensureBuilt()
    const prefix = uniquePrefix('fc-example')
    const env = { REDIS_URL, REDIS_PREFIX: prefix }
    const [portA, portB] = [await freePort(), await freePort()]
    let a = await startServer({ ...env, SERVER_LABEL: 'A' }, portA)
    const b = await startServer({ ...env, SERVER_LABEL: 'B' }, portB)
    const browser = await launchChromium()
    const redis = adminClient(t)
    t.teardown(async () => {
      await browser.close()
      await Promise.all([a.proc.stop(), b.proc.stop()])
      await deleteKeysOf(redis, prefix)
    })
    const errors: string[] = []
    const { page: ada } = await person(t, browser, a.url, 'Ada', errors)
    const { page: grace } = await person(t, browser, b.url, 'Grace', errors)
    await ada.locator('#presence .person', { hasText: 'Grace' }).waitFor()
    await say(grace, 'Before the restart.')
    await shownOnce(t, ada, 'Grace', 'Before the restart.')

    t.equal(await a.proc.stop(), 0, 'Ada\'s server process stops')
    await ada.locator('#conn[data-state="reconnecting"]').waitFor()
    await grace.locator('#presence .person', { hasText: 'Ada' }).waitFor({ state: 'detached' })
    t.pass('Grace sees Ada leave the room')
    for (let i = 1; i <= 3; i++) {
      await say(grace, `While A was down, line ${i}`)
      await shownOnce(t, grace, 'Grace', `While A was down, line ${i}`)
    }
    a = await startServer({ ...env, SERVER_LABEL: 'A' }, portA)
    await connected(ada, 30_000)
    for (let i = 1; i <= 3; i++) await shownOnce(t, ada, 'Grace', `While A was down, line ${i}`)
    await say(ada, 'Back on A.')
    await shownOnce(t, grace, 'Ada', 'Back on A.')
    await shownOnce(t, ada, 'Ada', 'Back on A.')
    t.same(await lines(ada), await lines(grace), 'both pages show the same lines, each once, in order')
    t.equal(await ada.locator('#messages .notice', { hasText: 'may be missing' }).count(), 0, 'recovered: no gap on Redis')
    await ada.screenshot({ path: join(shots, '08-redis-restart.png'), animations: 'disabled' })
    t.same(errors, [], 'no script errors in the pages')
  })

  t.test('behind nginx: when the process whose clock a page shows goes away for good, the page follows the other one\'s', { skip: noChromium ?? false }, async t => {
    if (!await requireRedis(t) || !requireNginx(t)) return
    await ensureBuilt()
    const prefix = uniquePrefix('fc-example-clock')
    const env = { REDIS_URL, REDIS_PREFIX: prefix }
    const [portA, portB] = [await freePort(), await freePort()]
    const servers: Record<string, ExampleServer> = {
      A: await startServer({ ...env, SERVER_LABEL: 'A' }, portA),
      B: await startServer({ ...env, SERVER_LABEL: 'B' }, portB)
    }
    const nginx = await startNginx(t, [portA, portB])
    const browser = await launchChromium()
    const redis = adminClient(t)
    t.teardown(async () => {
      await browser.close()
      await Promise.all(Object.values(servers).map(async server => await server.proc.stop()))
      await deleteKeysOf(redis, prefix)
    })
    const errors: string[] = []
    const { page } = await person(t, browser, `${nginx.url}/`, 'Ada', errors)
    const clockFrom = page.locator('#clock-server')
    await clockFrom.filter({ hasText: /^from [AB]$/ }).waitFor()
    const first = ((await clockFrom.textContent()) ?? '').slice('from '.length)
    const other = first === 'A' ? 'B' : 'A'
    t.equal(await servers[first].proc.stop(), 0, `the page's clock process (${first}) is scaled down`)
    await clockFrom.filter({ hasText: `from ${other}` }).waitFor({ timeout: 30_000 })
    t.pass(`the page shows ${other}'s clock`)
    const before = await page.locator('#clock-time').textContent()
    await page.locator('#clock-time').filter({ hasNotText: before ?? '' }).waitFor({ timeout: 5000 })
    t.pass('and it ticks')
    t.same(errors, [], 'no script errors in the page')
  })
}
