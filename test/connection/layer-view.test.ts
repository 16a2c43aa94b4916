/**
 * The `channelLayer` a consumer sees (lib/connection-layer.ts): the real layer, with memberships
 * of the connection's own channel counted. Through a real socket with a user's own layer class
 * (private fields, getters, EventEmitter methods, properties added later), and directly for what
 * a socket cannot show (views over several layers, `joined`).
 */
import t from 'tap'
import { EventEmitter } from 'node:events'
import { inspect } from 'node:util'
import { InMemoryChannelLayer, JsonWebsocketConsumer } from '../../lib/index.js'
import { joinedThrough, layerView } from '../../lib/connection/layer-view.js'
import { WebsocketCommunicator } from '../../lib/testing.js'
import { buildApp } from '../helpers/app.js'
import { contractOnly } from '../helpers/layers.js'

/** The connection, as a view tells it of a join or a leave that failed while nothing waited on it. */
const owner = {
  unawaited: [] as unknown[],
  taskFailed (err: unknown): void { this.unawaited.push(err) }
}

/** A user's own layer: extra state in private fields, reached through methods and accessors. */
class AuditedLayer extends InMemoryChannelLayer {
  readonly region = 'eu-west'
  #audits: string[] = []
  #label = 'initial'
  get audits (): number { return this.#audits.length }
  get label (): string { return this.#label }
  set label (value: string) { this.#label = value }
  audit (note: string): number {
    this.#audits.push(note)
    this.emit('audit', note)
    return this.#audits.length
  }
}

type Probe = { probe: true } | { join: string[] } | { leave: string } | { snakeJoin: string } | { detachedJoin: string }

t.test('a custom layer\'s own properties and methods reach the consumer; groupAdd past the limit still closes with 1008', async t => {
  const layer = new AuditedLayer()
  const heard: string[] = []
  const disconnects: number[] = []
  class Prober extends JsonWebsocketConsumer {
    override groups = ['lobby']
    override async receiveJson (content: Probe) {
      const view = this.channelLayer as AuditedLayer & { addedLater?: () => string }
      if ('probe' in content) {
        view.on('audit', (note: string) => { heard.push(note) })
        const sendFn = view.send
        view.label = 'set through the view'
        await this.sendJson({
          region: view.region,
          audit: view.audit('probed'),
          audits: view.audits,
          label: view.label,
          instance: view instanceof AuditedLayer && view instanceof InMemoryChannelLayer && view instanceof EventEmitter,
          stats: view.stats === layer.stats,
          processToken: view.processToken === layer.processToken,
          extensions: view.extensions,
          sameBound: view.send === sendFn && view.groupAdd === view.group_add,
          newChannel: (await view.new_channel('probe')).startsWith('probe.'),
          memberships: view.inspect().memberships,
          addedLater: view.addedLater?.() ?? null,
          has: ['audit', 'region', 'nope'].map(name => name in view),
          then: typeof (view as unknown as { then?: unknown }).then
        })
        return
      }
      if ('leave' in content) await view.group_discard(content.leave, this.channelName)
      if ('join' in content) for (const group of content.join) await view.groupAdd(group, this.channelName)
      if ('snakeJoin' in content) await view.group_add(content.snakeJoin, this.channelName)
      if ('detachedJoin' in content) {
        const { groupAdd } = view
        await groupAdd(content.detachedJoin, this.channelName)
      }
      await this.sendJson({ ok: true })
    }

    override async disconnect (code: number) { disconnects.push(code) }
  }
  const { app } = await buildApp({ layer, maxGroupsPerConnection: 3 }, app => app.get('/ws', { websocket: true }, Prober.asHandler()))
  t.teardown(() => app.close())

  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  // A property the layer gains once connections exist is seen too, bound to the layer.
  Object.assign(layer, { addedLater (this: AuditedLayer) { return `${this.region} later` } })
  await comm.sendJsonTo({ probe: true })
  t.same(await comm.receiveJsonFrom(), {
    region: 'eu-west',
    audit: 1,
    audits: 1,
    label: 'set through the view',
    instance: true,
    stats: true,
    processToken: true,
    extensions: ['groups', 'flush'],
    sameBound: true,
    newChannel: true,
    memberships: 1,
    addedLater: 'eu-west later',
    has: [true, true, false],
    then: 'undefined'
  }, 'the layer\'s own methods and accessors work on its private fields; new properties pass through')
  t.same(heard, ['probed'], 'on() through the view listens on the layer itself')
  t.equal(layer.label, 'set through the view', 'a write through the view reaches the layer')
  t.equal(layer.listenerCount('audit'), 1)

  // lobby + a + b = 3; joining one again does not count; leaving frees a slot.
  await comm.sendJsonTo({ join: ['a', 'b', 'a'] })
  t.same(await comm.receiveJsonFrom(), { ok: true })
  await comm.sendJsonTo({ leave: 'a', join: [] })
  t.same(await comm.receiveJsonFrom(), { ok: true })
  await comm.sendJsonTo({ detachedJoin: 'c' })
  t.same(await comm.receiveJsonFrom(), { ok: true }, 'groupAdd taken off the view still works and counts')
  t.equal(layer.inspect().memberships, 3)
  await comm.sendJsonTo({ snakeJoin: 'd' })
  t.match(await comm.closed, { code: 1008, reason: 'too many groups' }, 'the fourth group closes with 1008')
  await comm.serverFinished()
  t.same(disconnects, [1008])
  t.equal(layer.inspect().memberships, 0, 'every membership is gone')
  t.equal(layer.audits, 1)
})

t.test('layerView: memberships per view, views over several layers, joined', async t => {
  const memory = new AuditedLayer()
  const innerOfPlain = new InMemoryChannelLayer()
  const plain = contractOnly(innerOfPlain)
  t.teardown(async () => { await memory.close(); await innerOfPlain.close() })

  const one = { view: layerView(memory, 'one', 2, owner), get joined () { return joinedThrough(this.view) } }
  const two = { view: layerView(memory, 'two', 2, owner), get joined () { return joinedThrough(this.view) } }
  const other = { view: layerView(plain, 'three', 1, owner), get joined () { return joinedThrough(this.view) } }

  await one.view.groupAdd('g1', 'one')
  await one.view.group_add('g2', 'one')
  await one.view.groupAdd('x', 'someone-else')
  await two.view.groupAdd('g1', 'two')
  t.same([...one.joined], ['g1', 'g2'], 'only the view\'s own channel is counted')
  t.same([...two.joined], ['g1'], 'each view counts for itself')
  await t.rejects(one.view.groupAdd('g3', 'one'), { code: 'FST_CHANNELS_TOO_MANY_GROUPS' })
  await one.view.groupAdd('g1', 'one')
  t.pass('joining a group again is not one more')
  await one.view.groupDiscard('g1', 'one')
  await one.view.groupAdd('g3', 'one')
  t.same([...one.joined], ['g2', 'g3'], 'in the order joined, without the one left')
  t.equal(memory.inspect().memberships, 4)

  // A failing join does not keep the slot.
  const failing = layerView(memory, 'bad name with spaces', 1, owner)
  await t.rejects(failing.groupAdd('g', 'bad name with spaces'))
  t.same(joinedThrough(failing), [])

  // The plain object: its getters run on the layer, groupAdd is counted through the alias too.
  t.equal(other.view.extensions, innerOfPlain.extensions)
  t.equal(typeof other.view.group_send, 'function')
  const channel = await other.view.new_channel()
  await other.view.group_add('p', 'three')
  await t.rejects(other.view.groupAdd('q', 'three'), { code: 'FST_CHANNELS_TOO_MANY_GROUPS' })
  await other.view.group_discard('p', 'three')
  t.same([...other.joined], [])
  t.notOk(other.view instanceof InMemoryChannelLayer)
  await other.view.groupAdd('p', channel)
  await other.view.group_send('p', { type: 'hello' })
  t.same(await other.view.receive(channel), { type: 'hello' })

  t.match(inspect(one.view), /^AuditedLayer \{/, 'console.log shows the layer, as it did for a Proxy')
  await new Promise(resolve => setImmediate(resolve))
  t.same(owner.unawaited, [], 'failures that were awaited are the caller\'s, not reported')
})

t.test('layerView: many groups on one connection are counted and left like a few', async t => {
  const layer = new InMemoryChannelLayer()
  t.teardown(() => layer.close())
  const view = layerView(layer, 'many', 12, owner)
  const groups = Array.from({ length: 12 }, (_, i) => `g${i}`)
  for (const group of groups) await view.groupAdd(group, 'many')
  await view.groupAdd('g3', 'many')
  t.same(joinedThrough(view), groups, 'each group once, in the order joined')
  await t.rejects(view.groupAdd('g12', 'many'), { code: 'FST_CHANNELS_TOO_MANY_GROUPS' })
  await view.groupDiscard('g3', 'many')
  await view.groupAdd('g12', 'many')
  t.same(joinedThrough(view), [...groups.filter(g => g !== 'g3'), 'g12'])
  await t.rejects(view.groupAdd('g13', 'many'), { code: 'FST_CHANNELS_TOO_MANY_GROUPS' }, 'the limit still holds')
})
