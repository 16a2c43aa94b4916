/**
 * Hostile or broken input, through real sockets. Each kind gets its own clear answer, while a
 * witness client connected to the same consumer route keeps working after every one of them, no
 * promise rejection goes unhandled, nothing is logged at error level that is not the consumer's
 * own doing, and every accepted connection's disconnect() ran exactly once.
 *
 * The kinds, and what the client sees:
 *  1. malformed JSON                                   close 1003 "invalid JSON: …"
 *  2. an empty text frame                              close 1003 "invalid JSON: …"
 *  3. a binary frame to a JSON consumer                close 1003 "binary frames are not accepted…"
 *  4. `__proto__` key (prototype poisoning)            close 1003 "…forbidden prototype property"
 *  5. `constructor.prototype` (prototype poisoning)    close 1003 "…forbidden prototype property"
 *  6. `__proto__` buried deep inside arrays            close 1003 "…forbidden prototype property"
 *  7. 100,000 nested arrays                            close 1003 "…nested deeper than 32 levels"
 *  8. 100,000 nested objects                           close 1003 "…nested deeper than 32 levels"
 *  9. 33 levels (32 are accepted)                      close 1003 "…nested deeper than 32 levels"
 * 10. a message larger than maxPayload                 close 1009
 * 11. invalid UTF-8 in a text frame                    close 1007
 * 12. the deepest accepted JSON (32 levels), wrapped
 *     by the consumer into a group message             stays under the layer's 64: every member gets it
 * 13. layer message types naming base-class methods
 *     (`close`, `send`, `disconnect`, `accept`,
 *     `receive.json`), chosen by the client            dropped and logged at warn; connection stays open
 * 14. types naming Object.prototype or private names
 *     (`constructor`, `__proto__`, `to_string`,
 *     `has_own_property`, `_secret`)                   dropped and logged at warn; connection stays open
 * 15. an invalid group name from the URL               HTTP 500 before the upgrade, InvalidChannelNameError logged
 * 16. joining more groups than allowed                 close 1008 "too many groups"
 * 17. a malformed Sec-WebSocket-Protocol header        HTTP 400, no consumer built
 * 18. an unsupported Sec-WebSocket-Version             HTTP 400, no consumer built
 * 19. a missing Sec-WebSocket-Key                      HTTP 400, no consumer built
 * 20. an Upgrade header that is not `websocket`        HTTP 400, no consumer built
 * 21. an unmasked client frame                         close 1002
 * 22. a reserved opcode                                close 1002
 * 23. RSV1 set without a negotiated extension          close 1002
 * 24. a close frame with a code no one may send (1005) close 1002
 * 25. a control frame over 125 bytes                   close 1002
 * 26. a fragmented control frame                       close 1002
 * 27. a continuation frame with nothing to continue    close 1002
 * 28. a frame length past 2^53                         close 1009
 */
import t from 'tap'
import { JsonWebsocketConsumer, type LayerValue } from '../lib/index.js'
import { WebsocketCommunicator } from '../lib/testing.js'
import { buildApp, unhandledRejections } from './helpers/app.js'
import { frame, listen, rawSession, type RawResult } from './helpers/loopback.js'

const MAX_GROUPS = 5

const nested = (depth: number, inner = '0'): string => '['.repeat(depth) + inner + ']'.repeat(depth)

t.test('twenty-eight kinds of bad input, each with its clear error, while another client keeps working', async t => {
  const unhandled = unhandledRejections(t)

  let built = 0
  const disconnects = new Map<string, number>()

  class Chat extends JsonWebsocketConsumer {
    override groups = ['room']
    constructor () { super(); built++ }

    override async connect () {
      const room = this.scope.params.room
      if (room !== undefined) await this.channelLayer.groupAdd(`room_${room}`, this.channelName)
      await this.accept()
      disconnects.set(this.channelName, 0)
    }

    override async receiveJson (content: { [key: string]: LayerValue }) {
      if ('echo' in content) {
        await this.sendJson({ echo: content.echo })
      } else if ('broadcast' in content) {
        // Wrapping what the client sent adds levels; 32 for the client leaves room under the layer's 64.
        await this.channelLayer.groupSend('room', { type: 'chat.message', envelope: { from: this.channelName, content } })
      } else if (typeof content.selfType === 'string') {
        await this.channelLayer.send(this.channelName, { type: content.selfType })
        await this.channelLayer.send(this.channelName, { type: 'probe.done', probed: content.selfType })
      } else if (typeof content.joinMany === 'number') {
        for (let i = 0; i < content.joinMany; i++) await this.channelLayer.groupAdd(`extra_${i}`, this.channelName)
      }
    }

    async chatMessage (event: { envelope: unknown }) { await this.sendJson(event.envelope) }
    async probeDone (event: { probed: string }) { await this.sendJson({ probed: event.probed }) }

    override async disconnect () {
      disconnects.set(this.channelName, (disconnects.get(this.channelName) ?? 0) + 1)
    }
  }

  const { app, logs } = await buildApp({ maxGroupsPerConnection: MAX_GROUPS }, app => {
    app.get('/json', { websocket: true }, Chat.asHandler())
    app.get('/room/:room', { websocket: true }, Chat.asHandler())
  })
  const { port } = await listen(app)

  const witness = new WebsocketCommunicator(app, '/json')
  await witness.connect()
  let round = 0
  async function witnessStillWorks (): Promise<boolean> {
    round++
    await witness.sendJsonTo({ echo: round })
    const reply = await witness.receiveJsonFrom() as { echo?: number }
    return reply.echo === round
  }

  /** Opens a client, sends `frames`, and returns how its connection closed. */
  async function closeAfter (...frames: Array<string | Buffer>): Promise<{ code: number, reason: string }> {
    const comm = new WebsocketCommunicator(app, '/json')
    const { connected } = await comm.connect()
    if (!connected) throw new Error('the bad client could not even connect')
    for (const data of frames) await comm.sendTo(data)
    const closed = await comm.closed
    await comm.serverFinished()
    return closed
  }

  async function raw (headers: Record<string, string | undefined>, ...frames: Buffer[]): Promise<RawResult> {
    return await rawSession(port, '/json', headers, frames)
  }

  /** A handshake that must be refused before any consumer exists. */
  async function refusedHandshake (headers: Record<string, string | undefined>): Promise<{ status: number, built: number }> {
    const before = built
    const { status } = await raw(headers)
    return { status, built: built - before }
  }

  async function warnedAbout (type: string): Promise<boolean> {
    return logs.some(l => l.level === 40 && l.msg === 'no handler for message type; dropped' && l.type === type)
  }

  const invalidJson = { code: 1003, reason: /^invalid JSON: / }
  const poisoned = { code: 1003, reason: /forbidden prototype property/ }
  const tooDeep = { code: 1003, reason: /nested deeper than 32 levels/ }
  const protocolError = { status: 101, close: { code: 1002 } }

  const cases: Array<[string, () => Promise<unknown>, unknown]> = [
    ['1. malformed JSON', () => closeAfter('{"message": "hi"'), invalidJson],
    ['2. empty text frame', () => closeAfter(''), invalidJson],
    ['3. binary frame', () => closeAfter(Buffer.from([1, 2, 3])), { code: 1003, reason: /binary frames are not accepted/ }],
    ['4. __proto__', () => closeAfter('{"__proto__": {"isAdmin": true}}'), poisoned],
    ['5. constructor.prototype', () => closeAfter('{"constructor": {"prototype": {"isAdmin": true}}}'), poisoned],
    ['6. __proto__ buried deep', () => closeAfter('{"a": [1, {"b": [{"__proto__": {"isAdmin": true}}]}]}'), poisoned],
    ['7. 100,000 nested arrays', () => closeAfter(nested(100_000)), tooDeep],
    ['8. 100,000 nested objects', () => closeAfter('{"a":'.repeat(100_000) + '0' + '}'.repeat(100_000)), tooDeep],
    ['9. 33 levels; 32 pass', async () => {
      const comm = new WebsocketCommunicator(app, '/json')
      await comm.connect()
      await comm.sendTo(`{"echo": ${nested(31)}}`)
      const echoed = JSON.stringify(await comm.receiveJsonFrom())
      await comm.sendTo(`{"echo": ${nested(32)}}`)
      const closed = await comm.closed
      await comm.serverFinished()
      return { echoed32: echoed === JSON.stringify({ echo: JSON.parse(nested(31)) }), closed }
    }, { echoed32: true, closed: tooDeep }],
    ['10. larger than maxPayload', () => closeAfter('"' + 'x'.repeat(1024 * 1024) + '"'), { code: 1009 }],
    ['11. invalid UTF-8', () => raw({}, frame(0x1, Buffer.from([0x7b, 0xff, 0xfe, 0x7d]))), { status: 101, close: { code: 1007 } }],
    ['12. the deepest accepted JSON, wrapped into a group message', async () => {
      const comm = new WebsocketCommunicator(app, '/json')
      await comm.connect()
      const content = { broadcast: JSON.parse(nested(31)) }
      await comm.sendJsonTo(content)
      const [sender, member] = await Promise.all([comm.receiveJsonFrom(), witness.receiveJsonFrom()]) as Array<{ content: unknown }>
      await comm.disconnect()
      return { sender: sender.content, member: member.content }
    }, { sender: { broadcast: JSON.parse(nested(31)) }, member: { broadcast: JSON.parse(nested(31)) } }],
    ['13. types naming base-class methods', async () => {
      const comm = new WebsocketCommunicator(app, '/json')
      await comm.connect()
      const seen: Array<[string, unknown, boolean]> = []
      for (const type of ['close', 'send', 'disconnect', 'accept', 'receive.json']) {
        await comm.sendJsonTo({ selfType: type })
        seen.push([type, await comm.receiveJsonFrom(), await warnedAbout(type)])
      }
      await comm.disconnect()
      return seen
    }, ['close', 'send', 'disconnect', 'accept', 'receive.json'].map(type => [type, { probed: type }, true])],
    ['14. types naming Object.prototype or private names', async () => {
      const comm = new WebsocketCommunicator(app, '/json')
      await comm.connect()
      const seen: Array<[string, unknown, boolean]> = []
      for (const type of ['constructor', '__proto__', 'to_string', 'has_own_property', '_secret']) {
        await comm.sendJsonTo({ selfType: type })
        seen.push([type, await comm.receiveJsonFrom(), await warnedAbout(type)])
      }
      await comm.disconnect()
      return seen
    }, ['constructor', '__proto__', 'to_string', 'has_own_property', '_secret'].map(type => [type, { probed: type }, true])],
    ['15. invalid group name from the URL', async () => {
      const before = built
      const accented = await new WebsocketCommunicator(app, '/room/caf%C3%A9').connect()
      const spaced = await new WebsocketCommunicator(app, '/room/a%20b').connect()
      const logged = logs.filter(l => l.level === 50 && (l.err as { code?: string } | undefined)?.code === 'FST_CHANNELS_INVALID_NAME').length
      return { accented: accented.status, spaced: spaced.status, logged, built: built - before }
    }, { accented: 500, spaced: 500, logged: 2, built: 2 }],
    ['16. too many groups', () => closeAfter(JSON.stringify({ joinMany: MAX_GROUPS })), { code: 1008, reason: 'too many groups' }],
    ['17. malformed Sec-WebSocket-Protocol', async () => {
      const before = built
      const { status } = await new WebsocketCommunicator(app, '/json', { subprotocols: ['chat', 'chat v2'] }).connect()
      return { status, built: built - before }
    }, { status: 400, built: 0 }],
    ['18. unsupported Sec-WebSocket-Version', () => refusedHandshake({ 'sec-websocket-version': '7' }), { status: 400, built: 0 }],
    ['19. missing Sec-WebSocket-Key', () => refusedHandshake({ 'sec-websocket-key': undefined }), { status: 400, built: 0 }],
    ['20. Upgrade header not websocket', () => refusedHandshake({ upgrade: 'h2c' }), { status: 400, built: 0 }],
    ['21. unmasked frame', () => raw({}, frame(0x1, '{"echo":1}', { mask: false })), protocolError],
    ['22. reserved opcode', () => raw({}, frame(0x3, 'x')), protocolError],
    ['23. RSV1 without an extension', () => raw({}, frame(0x1, '{}', { rsv1: true })), protocolError],
    ['24. close code 1005 sent by the client', () => raw({}, frame(0x8, Buffer.from([0x03, 0xed]))), protocolError],
    ['25. control frame over 125 bytes', () => raw({}, frame(0x9, Buffer.alloc(126))), protocolError],
    ['26. fragmented control frame', () => raw({}, frame(0x9, 'ping', { fin: false })), protocolError],
    ['27. continuation with nothing to continue', () => raw({}, frame(0x0, 'tail')), protocolError],
    ['28. frame length past 2^53', () => raw({}, Buffer.from([0x82, 0xff, 0x00, 0x20, 0, 0, 0, 0, 0, 0])), { status: 101, close: { code: 1009 } }]
  ]

  const builtBefore = built
  for (const [name, run, expected] of cases) {
    t.match(await run(), expected, name)
    t.ok(await witnessStillWorks(), `${name}: the witness still works`)
  }
  t.ok(built > builtBefore, 'consumers were built for the cases that got past the handshake')

  await witness.disconnect()
  await app.close()
  t.same(unhandled, [], 'no unhandled rejection')
  t.same([...disconnects.values()].filter(n => n !== 1), [], `every accepted connection (${disconnects.size}) ran disconnect() exactly once`)
  const errors = logs.filter(l => typeof l.level === 'number' && l.level >= 50)
  t.same(errors.map(l => (l.err as { code?: string } | undefined)?.code).filter(code => code !== 'FST_CHANNELS_INVALID_NAME'), [],
    'nothing at error level but the consumer\'s own failure (case 15)')
})
