import t, { type Test } from 'tap'
import { JsonWebsocketConsumer } from '../lib/index.js'
import { WebsocketCommunicator } from '../lib/testing.js'
import { buildApp } from './helpers/app.js'

class Echo extends JsonWebsocketConsumer {
  override async receiveJson (content: unknown) { await this.sendJson({ echo: content }) }
}

async function setup (t: Test) {
  const built = await buildApp({}, app => app.get('/ws', { websocket: true }, Echo.asHandler()))
  t.teardown(() => built.app.close())
  const bystander = new WebsocketCommunicator(built.app, '/ws')
  await bystander.connect()
  return { ...built, bystander }
}

t.test('JSON in, JSON out', async t => {
  const { app } = await setup(t)
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  await comm.sendJsonTo({ message: 'hi', n: [1, 2] })
  t.same(await comm.receiveJsonFrom(), { echo: { message: 'hi', n: [1, 2] } })
})

const refused: Array<[string, string | Uint8Array, RegExp]> = [
  ['malformed JSON', '{"message": ', /^invalid JSON: /],
  ['a binary frame', new Uint8Array([123, 125]), /^binary frames are not accepted/],
  ['a __proto__ key', '{"__proto__": {"admin": true}}', /^invalid JSON: .*prototype/],
  ['a constructor.prototype key', '{"constructor": {"prototype": {"admin": true}}}', /^invalid JSON: .*prototype/],
  ['nesting deeper than 32', '['.repeat(33) + ']'.repeat(33), /^invalid JSON: nested deeper than 32/],
  ['nesting 100,000 deep', '{"a":'.repeat(100_000) + '1' + '}'.repeat(100_000), /^invalid JSON: nested deeper than 32/]
]

for (const [what, frame, reason] of refused) {
  t.test(`${what} closes that connection with 1003 and a reason; others are unaffected`, async t => {
    const { app, logs, bystander } = await setup(t)
    const comm = new WebsocketCommunicator(app, '/ws')
    await comm.connect()
    await comm.sendTo(frame)
    const closed = await comm.closed
    t.equal(closed.code, 1003)
    t.match(closed.reason, reason)
    t.ok(Buffer.byteLength(closed.reason) <= 123, 'the reason fits a close frame')
    t.ok(logs.some(l => l.level === 40 && typeof l.msg === 'string' && /JSON/.test(l.msg)), 'logged at warn')
    await bystander.sendJsonTo({ still: 'here' })
    t.same(await bystander.receiveJsonFrom(), { echo: { still: 'here' } })
  })
}

t.test('32 levels of nesting are accepted', async t => {
  const { app } = await setup(t)
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  const deep = '['.repeat(31) + ']'.repeat(31)
  await comm.sendTo(deep)
  t.equal(await comm.receiveFrom(), `{"echo":${deep}}`)
})

t.test('encodeJson and decodeJson may be overridden', async t => {
  class Upper extends JsonWebsocketConsumer {
    static override encodeJson (value: unknown) { return JSON.stringify(value).toUpperCase() }
    static override decodeJson (text: string) { return { wrapped: text } }
    override async receiveJson (content: unknown) { await this.sendJson(content) }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Upper.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  await comm.sendTo('not json')
  t.equal(await comm.receiveFrom(), '{"WRAPPED":"NOT JSON"}')
})
