/**
 * Header values many clients send alike are held once per process (lib/shared-header-values.ts):
 * what a consumer reads in `scope.headers` is exactly what its client sent, whatever another
 * client sent, and the table of held values stops growing at its bound.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { JsonWebsocketConsumer } from '../lib/index.js'
import { shareHeaderValues, sharedHeaderValueCount } from '../lib/shared-header-values.js'
import { buildApp } from './helpers/app.js'
import { listen, openClient } from './helpers/loopback.js'

class Headers extends JsonWebsocketConsumer {
  override async connect () {
    await this.accept()
    await this.sendJson(this.scope.headers)
  }
}

t.test('each consumer reads the headers its own client sent, over real sockets', async t => {
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Headers.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const browser = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36'
  const sent = [
    { 'user-agent': browser, 'accept-language': 'en-GB,en;q=0.9', 'x-tenant': 'one' },
    { 'user-agent': browser, 'accept-language': 'fr-FR,fr;q=0.8', 'x-tenant': 'two' },
    { 'user-agent': `${browser} Edg/131.0`, 'accept-language': 'en-GB,en;q=0.9', 'x-tenant': 'three' }
  ]
  for (const headers of sent) {
    let received!: Promise<Record<string, string>>
    const { ws } = await openClient(`${url}/ws`, { headers }, ws => {
      received = new Promise(resolve => ws.once('message', data => resolve(JSON.parse(String(data)) as Record<string, string>)))
    })
    const seen = await received
    t.match(seen, headers, `client ${headers['x-tenant']} sees its own values`)
    t.equal(seen.upgrade, 'websocket')
    ws.close()
  }
})

t.test('the table of held values is bounded: new values past it are kept as they came', async t => {
  const before = sharedHeaderValueCount()
  for (let i = 0; i < 1100; i++) {
    const agent = randomBytes(24).toString('hex')
    const headers = { 'user-agent': agent, 'sec-websocket-key': randomBytes(16).toString('base64') }
    shareHeaderValues(headers)
    if (headers['user-agent'] !== agent) t.fail('a value changed')
  }
  t.ok(before < 1024)
  t.equal(sharedHeaderValueCount(), 1024, 'stops at 1,024 values, however many clients send new ones')
  const long = 'a'.repeat(600)
  const headers = { 'user-agent': long, origin: 'https://example.com' }
  shareHeaderValues(headers)
  t.same(headers, { 'user-agent': long, origin: 'https://example.com' })
})
