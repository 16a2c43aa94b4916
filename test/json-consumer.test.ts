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

t.test('a malformed frame is refused without quoting it: a password in it reaches neither the log nor the close reason', async t => {
  const { app, logs } = await setup(t)
  const secret = 'hunter2-S3cr3t'
  for (const frame of [`{"pw":${secret}}`, `{"op":"login","username":"bob","password":${secret}-and-more-text-after-it}`]) {
    const comm = new WebsocketCommunicator(app, '/ws')
    await comm.connect()
    await comm.sendTo(frame)
    const closed = await comm.closed
    t.equal(closed.code, 1003)
    t.match(closed.reason, /^invalid JSON: Unexpected token 'h'$/, 'the reason says what is wrong')
  }
  t.ok(logs.some(l => l.level === 40 && /JSON/.test(String(l.msg))), 'refusals are logged at warn')
  t.notOk(JSON.stringify(logs).includes('hunter2'), 'no log line at any level quotes the frame')
})

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

// Channels' async decode_json/encode_json ported as they are, and an encodeJson that returns no text.
for (const side of ['decodeJson', 'encodeJson', 'encodeJson returning an object'] as const) {
  t.test(`${side === 'encodeJson returning an object' ? 'an encodeJson that returns an object' : `an async ${side} (Channels' async ${side === 'decodeJson' ? 'decode_json' : 'encode_json'})`} is refused with an error that names it, logged; the connection closes with 1011`, async t => {
    class Ported extends JsonWebsocketConsumer {
      static override decodeJson (text: string): unknown {
        return side === 'decodeJson' ? Promise.resolve(JSON.parse(text)) : JSON.parse(text)
      }

      static override encodeJson (value: unknown): string {
        if (side === 'encodeJson returning an object') return value as string
        return (side === 'encodeJson' ? Promise.resolve(JSON.stringify(value)) : JSON.stringify(value)) as string
      }

      override async receiveJson (content: unknown) { await this.sendJson(content) }
    }
    const { app, logs } = await buildApp({}, app => app.get('/ws', { websocket: true }, Ported.asHandler()))
    t.teardown(() => app.close())
    const comm = new WebsocketCommunicator(app, '/ws')
    await comm.connect()
    await comm.sendJsonTo({ hello: 1 })
    t.match(await comm.closed, { code: 1011 })
    const err = logs.find(l => (l.level as number) >= 50)?.err as { code?: string, message?: string } | undefined
    const message = side === 'encodeJson returning an object'
      ? 'Ported.encodeJson() returned object: it must return the text'
      : `Ported.${side}() returned a promise`
    t.match(err, { code: 'FST_CHANNELS_INVALID_OPTION', message })
  })
}

t.test('a group message to many members: each client gets exactly the JSON of what its own handler sent, changed or not', async t => {
  const { listen, openClient } = await import('./helpers/loopback.js')
  // What each member's handler does to its copy before sendJson (members fan out in join order,
  // so unchanged copies come before, between and after changed ones).
  // Synchronous, so that sendJson() runs within the fan-out, as in a handler that sends at once;
  // `late` sends after a wait, once the fan-out is over.
  const edits: Record<string, (event: Record<string, any>) => unknown> = {
    same: event => event.payload,
    whole: event => event,
    change: event => { event.payload.n = 99; return event.payload },
    reorder: event => { const a = event.payload.a; delete event.payload.a; event.payload.a = a; return event.payload },
    add: event => { event.payload.extra = true; return event.payload },
    nested: event => { event.payload.list.push(4); return event.payload },
    replace: event => { event.payload.list = [1, 2, 3]; return event.payload },
    hidden: event => { Object.defineProperty(event.payload, 'toJSON', { value: () => 'custom' }); return event.payload },
    deep: event => { event.payload.o.x = 2; return event.payload },
    deepAdd: event => { event.payload.o.z = 0; return event.payload },
    deepProto: event => { Object.setPrototypeOf(event.payload.o, { inherited: true }); return event.payload },
    deepGone: event => { event.payload.o = 'flat'; return event.payload },
    dropLast: event => { delete event.payload.t; return event.payload },
    deepDropLast: event => { delete event.payload.o.y; return event.payload },
    other: event => ({ n: event.payload.n }),
    late: event => new Promise(resolve => setTimeout(() => resolve(event.payload), 20))
  }
  class Member extends JsonWebsocketConsumer {
    override groups = ['feed']
    async feedItem (event: Record<string, any>) {
      const content = edits[this.scope.params.how as string](event)
      await this.sendJson(content instanceof Promise ? await content : content)
    }
  }
  const { app } = await buildApp({}, app => app.get('/feed/:how', { websocket: true }, Member.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  // More than 8 members: from the second message on, copies and comparisons are compiled code.
  const order = ['same', 'change', 'same', 'reorder', 'whole', 'same', 'add', 'nested', 'same', 'replace', 'deep', 'hidden', 'same', 'deepAdd',
    'other', 'deepProto', 'late', 'same', 'deepGone', 'dropLast', 'same', 'deepDropLast', 'change']
  const clients = []
  for (const how of order) {
    const texts: string[] = []
    const { ws } = await openClient(`${url}/feed/${how}`, {}, ws => ws.on('message', data => { texts.push(data.toString()) }))
    t.teardown(() => ws.terminate())
    clients.push({ how, texts })
  }
  const payload = { n: 1, a: 'x', list: [1, 2, 3], o: { x: 1, y: null }, t: 0.1 + 0.2 }
  const expected: Record<string, string> = {
    same: '{"n":1,"a":"x","list":[1,2,3],"o":{"x":1,"y":null},"t":0.30000000000000004}',
    whole: '{"type":"feed.item","payload":{"n":1,"a":"x","list":[1,2,3],"o":{"x":1,"y":null},"t":0.30000000000000004}}',
    change: '{"n":99,"a":"x","list":[1,2,3],"o":{"x":1,"y":null},"t":0.30000000000000004}',
    reorder: '{"n":1,"list":[1,2,3],"o":{"x":1,"y":null},"t":0.30000000000000004,"a":"x"}',
    add: '{"n":1,"a":"x","list":[1,2,3],"o":{"x":1,"y":null},"t":0.30000000000000004,"extra":true}',
    nested: '{"n":1,"a":"x","list":[1,2,3,4],"o":{"x":1,"y":null},"t":0.30000000000000004}',
    replace: '{"n":1,"a":"x","list":[1,2,3],"o":{"x":1,"y":null},"t":0.30000000000000004}',
    hidden: '"custom"',
    deep: '{"n":1,"a":"x","list":[1,2,3],"o":{"x":2,"y":null},"t":0.30000000000000004}',
    deepAdd: '{"n":1,"a":"x","list":[1,2,3],"o":{"x":1,"y":null,"z":0},"t":0.30000000000000004}',
    // JSON.stringify reads own keys only: the same text, though the object is no longer plain.
    deepProto: '{"n":1,"a":"x","list":[1,2,3],"o":{"x":1,"y":null},"t":0.30000000000000004}',
    deepGone: '{"n":1,"a":"x","list":[1,2,3],"o":"flat","t":0.30000000000000004}',
    dropLast: '{"n":1,"a":"x","list":[1,2,3],"o":{"x":1,"y":null}}',
    deepDropLast: '{"n":1,"a":"x","list":[1,2,3],"o":{"x":1},"t":0.30000000000000004}',
    other: '{"n":1}',
    late: '{"n":1,"a":"x","list":[1,2,3],"o":{"x":1,"y":null},"t":0.30000000000000004}'
  }
  for (let round = 0; round < 3; round++) {
    await app.channelLayer.groupSend('feed', { type: 'feed.item', payload })
    for (const client of clients) {
      while (client.texts.length <= round) await new Promise(resolve => setTimeout(resolve, 5))
      t.equal(client.texts[round], expected[client.how], `${client.how}, message ${round + 1}`)
    }
  }
  t.same(payload, { n: 1, a: 'x', list: [1, 2, 3], o: { x: 1, y: null }, t: 0.1 + 0.2 }, 'the sender\'s object is untouched')
})

t.test('deeper than a message structure is compiled, one message may differ from the next: a copy is compared with its own', async t => {
  // The payload's object `d` is 5 levels into the message, below what its structure's code fixes.
  // One member turns its `d` into one with the keys of the earlier messages' `d`, every value
  // undefined (which JSON leaves out): compared with the keys the code was written for, it would
  // look unchanged and get the text of the member before.
  class Member extends JsonWebsocketConsumer {
    override groups = ['deep']
    async deepItem (event: Record<string, any>) {
      if ((this.scope.query as { twist?: string }).twist === '1') {
        const d = event.payload.a.b.c.d
        for (const key of Object.keys(d)) delete d[key]
        d.y = undefined
      }
      await this.sendJson(event.payload)
    }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Member.asHandler()))
  t.teardown(() => app.close())
  const members: WebsocketCommunicator[] = []
  for (let i = 0; i < 10; i++) {
    const member = new WebsocketCommunicator(app, i === 2 ? '/ws?twist=1' : '/ws')
    await member.connect()
    members.push(member)
  }
  const deep = (d: Record<string, number>) => ({ a: { b: { c: { d } } } })
  // Two of one structure compile it; the third has it too, with another `d`.
  const ds: Array<Record<string, number>> = [{ y: 2 }, { y: 3 }, { x: 1 }]
  for (const d of ds) {
    await app.channelLayer.groupSend('deep', { type: 'deep.item', payload: deep(d) })
    for (let i = 0; i < members.length; i++) {
      t.equal(JSON.stringify(await members[i].receiveJsonFrom()), JSON.stringify(deep(i === 2 ? {} : d)), `member ${i}, d ${JSON.stringify(d)}`)
    }
  }
  for (const member of members) await member.disconnect()
})

t.test('sendJson() of something JSON cannot encode (undefined, a function) rejects with a clear error; nothing is sent', async t => {
  const outcomes: unknown[] = []
  class Careless extends JsonWebsocketConsumer {
    override async receiveJson (content: { send?: string }) {
      const value = content.send === 'function' ? () => {} : undefined
      await this.sendJson(value).then(() => outcomes.push('sent'), (err: unknown) => outcomes.push(err))
      await this.sendJson({ after: content.send })
    }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Careless.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  for (const send of ['undefined', 'function']) {
    await comm.sendJsonTo({ send })
    t.same(await comm.receiveJsonFrom(), { after: send }, `sendJson(${send}) sent nothing: the next frame is the one after it`)
  }
  t.match(outcomes, [
    { code: 'FST_CHANNELS_INVALID_OPTION', message: 'sendJson(content) takes a value JSON can encode, got undefined' },
    { code: 'FST_CHANNELS_INVALID_OPTION', message: 'sendJson(content) takes a value JSON can encode, got function' }
  ])
  await comm.disconnect()
})
