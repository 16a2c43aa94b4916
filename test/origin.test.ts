/**
 * Origin checks (Channels' OriginValidator) through real handshakes: who gets 101 and who gets 403,
 * that the check runs before the route's own hooks (no hook, no consumer for a refused Origin),
 * that refusals are logged with the Origin, and that bad patterns fail `register`.
 */
import t from 'tap'
import Fastify from 'fastify'
import fastifyChannels, { WebsocketConsumer, type FastifyChannelsOptions } from '../lib/index.js'
import { WebsocketCommunicator } from '../lib/testing.js'
import { buildApp } from './helpers/app.js'

class Echo extends WebsocketConsumer {
  override async receive (text?: string) { await this.send(text ?? '') }
}

async function originApp (opts: FastifyChannelsOptions = {}) {
  return await buildApp(opts, app => app.get('/ws', { websocket: true }, Echo.asHandler()))
}

/** The status a handshake gets with these headers (101 when connected; the socket is then closed). */
async function statusFor (app: Awaited<ReturnType<typeof originApp>>['app'], headers: Record<string, string>): Promise<number> {
  const comm = new WebsocketCommunicator(app, '/ws', { headers })
  const { status, connected } = await comm.connect()
  if (connected) {
    await comm.sendTo('ping')
    if (await comm.receiveFrom() !== 'ping') throw new Error('connected but the consumer did not answer')
    await comm.disconnect()
  }
  return status
}

t.test('default: the Origin must be the request\'s own host and port', async t => {
  const { app } = await originApp()
  t.teardown(() => app.close())
  const cases: Array<[string, string | undefined, number, string]> = [
    ['app.example:3000', 'http://app.example:3000', 101, 'same host and port'],
    ['app.example:3000', 'https://app.example:3000', 101, 'the scheme is not part of Host'],
    ['APP.Example:3000', 'http://app.example:3000', 101, 'host names compare case-insensitively'],
    ['app.example', 'https://app.example', 101, 'no port in Host: the Origin\'s default port (443)'],
    ['app.example', 'http://app.example', 101, 'no port in Host: the Origin\'s default port (80)'],
    ['app.example:80', 'http://app.example', 101, 'default port written out in Host'],
    ['app.example', 'http://app.example:8080', 403, 'another port'],
    ['app.example:3000', 'http://app.example:3001', 403, 'another port, both explicit'],
    ['app.example:443', 'http://app.example', 403, 'http\'s default port is 80, not 443'],
    ['app.example:3000', 'http://app.example.evil.example:3000', 403, 'look-alike host'],
    ['app.example:3000', 'http://evil.example:3000', 403, 'another site'],
    ['app.example:3000', 'http://sub.app.example:3000', 403, 'a subdomain is another origin'],
    ['app.example:3000', 'null', 403, 'Origin: null (sandboxed iframe, file://)'],
    ['app.example:3000', 'not a url', 403, 'garbage'],
    ['app.example:3000', 'http://app.example:3000/path', 403, 'an Origin never has a path'],
    ['app.example:3000', '', 403, 'empty Origin'],
    ['app.example:3000', undefined, 101, 'no Origin: not a browser, allowed by default']
  ]
  for (const [host, origin, expected, why] of cases) {
    const headers: Record<string, string> = { host }
    if (origin !== undefined) headers.origin = origin
    t.equal(await statusFor(app, headers), expected, `${why}: Host ${host}, Origin ${String(origin)}`)
  }
  t.equal(await statusFor(app, { origin: 'http://app.example' }), 403, 'an Origin but no Host to compare it with')
})

t.test('allowedOrigins: Channels\' patterns', async t => {
  const { app } = await originApp({
    allowedOrigins: ['good.example', '.trusted.example', 'https://secure.example:8443', 'http://plain.example', 'http://[::1]:8080']
  })
  t.teardown(() => app.close())
  const host = 'app.example'
  const cases: Array<[string, number, string]> = [
    ['http://good.example', 101, 'a bare domain matches any scheme'],
    ['https://good.example:9999', 101, '... and any port'],
    ['http://sub.good.example', 403, 'a bare domain does not match its subdomains'],
    ['http://good.example.evil.example', 403, 'look-alike: the allowed name as a prefix'],
    ['http://evilgood.example', 403, 'look-alike: the allowed name as a suffix without a dot'],
    ['https://trusted.example', 101, 'a leading dot matches the domain itself'],
    ['https://a.b.trusted.example', 101, '... and every subdomain'],
    ['http://nottrusted.example', 403, '... but not a name that merely ends the same'],
    ['https://trusted.example.evil.example', 403, '... nor a look-alike'],
    ['https://secure.example:8443', 101, 'scheme, host and port all match'],
    ['https://secure.example', 403, 'the port differs (443)'],
    ['http://secure.example:8443', 403, 'the scheme differs'],
    ['http://plain.example', 101, 'scheme pattern without port: the default port 80'],
    ['http://plain.example:80', 101, '... written out'],
    ['http://plain.example:8080', 403, '... another port'],
    ['https://plain.example', 403, '... another scheme'],
    ['http://[::1]:8080', 101, 'IPv6 literal with port'],
    ['http://app.example', 403, 'with allowedOrigins, the own host is not allowed unless listed'],
    ['null', 403, 'Origin: null'],
    ['HTTP://GOOD.EXAMPLE', 101, 'case-insensitive']
  ]
  for (const [origin, expected, why] of cases) {
    t.equal(await statusFor(app, { host, origin }), expected, `${why}: ${origin}`)
  }
  t.equal(await statusFor(app, { host }), 101, 'no Origin: allowed')
})

t.test("allowedOrigins ['*'] allows every Origin, even null", async t => {
  const { app } = await originApp({ allowedOrigins: ['*'] })
  t.teardown(() => app.close())
  for (const origin of ['null', 'http://anything.example', 'chrome-extension://abcdef']) {
    t.equal(await statusFor(app, { host: 'app.example', origin }), 101, origin)
  }
})

t.test('rejectMissingOrigin: a request without Origin gets 403', async t => {
  const { app } = await originApp({ rejectMissingOrigin: true })
  t.teardown(() => app.close())
  t.equal(await statusFor(app, { host: 'app.example' }), 403)
  t.equal(await statusFor(app, { host: 'app.example', origin: 'http://app.example' }), 101, 'a same-host Origin still passes')
})

t.test('a refused Origin gets 403 before the route\'s own hooks: no hook runs, no consumer is built; logged at info', async t => {
  const ran: string[] = []
  let built = 0
  class Counted extends Echo { constructor () { super(); built++ } }
  const { app, logs } = await buildApp({}, app => {
    app.register(async function authPlugin (child) {
      // Hooks of an encapsulating plugin (e.g. @fastify/auth) and of the route itself.
      child.addHook('onRequest', async () => { ran.push('plugin onRequest') })
      child.get('/ws', {
        websocket: true,
        onRequest: async () => { ran.push('route onRequest') },
        preValidation: async () => { ran.push('route preValidation') }
      }, Counted.asHandler())
    })
  })
  t.teardown(() => app.close())
  const refused = new WebsocketCommunicator(app, '/ws', { headers: { host: 'app.example', origin: 'https://evil.example' } })
  t.match(await refused.connect(), { connected: false, status: 403 })
  t.same(ran, [], 'no hook of the route ran')
  t.equal(built, 0, 'no consumer was built')
  const line = logs.find(l => typeof l.msg === 'string' && l.msg.includes('Origin not allowed'))
  t.match(line, { level: 30, origin: 'https://evil.example', host: 'app.example', url: '/ws' }, 'logged at info with the Origin')

  const allowed = new WebsocketCommunicator(app, '/ws', { headers: { host: 'app.example', origin: 'https://app.example' } })
  t.match(await allowed.connect(), { connected: true })
  t.same(ran, ['plugin onRequest', 'route onRequest', 'route preValidation'], 'an allowed Origin goes through the hooks')
  t.equal(built, 1)
  await allowed.disconnect()
})

t.test('only upgrades to consumer routes are checked: HTTP routes keep their own CORS story', async t => {
  const { app } = await buildApp({}, app => {
    app.get('/ws', { websocket: true }, Echo.asHandler())
    app.get('/api', async () => ({ ok: true }))
  })
  t.teardown(() => app.close())
  const res = await app.inject({ url: '/api', headers: { host: 'app.example', origin: 'https://evil.example' } })
  t.equal(res.statusCode, 200)
})

t.test('a malformed handshake is refused with 400 before any hook or consumer runs', async t => {
  let built = 0
  class Counted extends Echo { constructor () { super(); built++ } }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Counted.asHandler()))
  t.teardown(() => app.close())
  const bad = new WebsocketCommunicator(app, '/ws', { subprotocols: ['not a token'] })
  t.match(await bad.connect(), { connected: false, status: 400 }, 'a subprotocol with spaces')
  const dup = new WebsocketCommunicator(app, '/ws', { subprotocols: ['v1', 'v1'] })
  t.match(await dup.connect(), { connected: false, status: 400 }, 'a repeated subprotocol')
  t.equal(built, 0)
})

t.test('bad allowedOrigins / rejectMissingOrigin values fail register with a clear error', async t => {
  const bad: Array<[unknown, RegExp]> = [
    ['example.com', /must be an array/],
    [[''], /non-empty strings/],
    [[42], /non-empty strings/],
    [['*.example.com'], /'\*' only stands alone/],
    [['example.com:8080'], /a port needs a scheme/],
    [['https://'], /is not scheme:\/\/host/],
    [['https://example.com:99999'], /bad port/],
    [['https://example.com:http'], /bad port|scheme:\/\/host/],
    [['exa mple.com'], /is not a domain/],
    [['null'], /never the Origin 'null'.*only '\*'/],
    [['..example.com'], /empty label/],
    [['example..com'], /empty label/],
    [['https://app..example.com'], /empty label/],
    [['example.com.'], /ends with a dot.*write 'example\.com'/],
    [['http://example.com.:8080'], /ends with a dot.*write 'http:\/\/example\.com:8080'/]
  ]
  for (const [allowedOrigins, message] of bad) {
    const app = Fastify()
    await t.rejects(async () => { await app.register(fastifyChannels, { allowedOrigins } as FastifyChannelsOptions) },
      { code: 'FST_CHANNELS_INVALID_OPTION', message }, JSON.stringify(allowedOrigins))
    await app.close()
  }
  const app = Fastify()
  await t.rejects(async () => { await app.register(fastifyChannels, { rejectMissingOrigin: 'yes' } as unknown as FastifyChannelsOptions) },
    { code: 'FST_CHANNELS_INVALID_OPTION', message: /rejectMissingOrigin/ })
  await app.close()
  const good = Fastify()
  await good.register(fastifyChannels, { allowedOrigins: ['*', 'example.com', '.example.com', 'https://example.com:8443', 'http://.example.org', 'http://[::1]'] })
  await good.ready()
  t.pass('every documented pattern form is accepted')
  await good.close()
})

t.test('behind a trusted proxy (trustProxy): the Origin is checked against the forwarded host; scope.client is the forwarded address', async t => {
  const { listen, openClient } = await import('./helpers/loopback.js')
  class Who extends WebsocketConsumer {
    override async connect () {
      await this.accept()
      await this.send(JSON.stringify({ client: this.scope.client, host: this.scope.request.host }))
    }
  }
  const open = async (trustProxy: boolean) => {
    const app = Fastify({ trustProxy })
    await app.register(fastifyChannels)
    app.get('/ws', { websocket: true }, Who.asHandler())
    t.teardown(() => app.close())
    return await listen(app)
  }
  // What nginx sends for a page at https://chat.example: the browser's Origin and Host, forwarded.
  const forwarded = { origin: 'https://chat.example', 'x-forwarded-host': 'chat.example', 'x-forwarded-proto': 'https', 'x-forwarded-for': '203.0.113.9' }
  // The greeting may come in the same packet as the handshake's answer: listen from the start.
  const greeted = async (url: string, headers: Record<string, string> = {}): Promise<unknown> => {
    let greeting!: Promise<string>
    const { ws } = await openClient(url, { headers }, ws => { greeting = new Promise(resolve => ws.once('message', data => resolve(String(data)))) })
    const text = await greeting
    ws.close()
    return JSON.parse(text)
  }
  const trusted = await open(true)
  t.same(await greeted(`${trusted.url}/ws`, forwarded), { client: { address: '203.0.113.9', port: 0 }, host: 'chat.example' })
  t.same(await greeted(`${trusted.url}/ws`, { ...forwarded, 'x-forwarded-for': '127.0.0.1' }), { client: { address: '127.0.0.1', port: 0 }, host: 'chat.example' },
    'a forwarded address that is the proxy\'s own is still forwarded: no port')
  await t.rejects(openClient(`${trusted.url}/ws`, { headers: { ...forwarded, origin: 'https://evil.example' } }), /HTTP 403/,
    'another Origin is still refused')
  const direct = await open(false)
  await t.rejects(openClient(`${direct.url}/ws`, { headers: forwarded }), /HTTP 403/,
    'without trustProxy the forwarded headers are ignored: the Origin is not the socket\'s Host')
  const { client } = await greeted(`${direct.url}/ws`) as { client: { address: string, port: number } }
  t.equal(client.address, '127.0.0.1')
  t.ok(client.port > 0, 'a direct client has its own port')
})
