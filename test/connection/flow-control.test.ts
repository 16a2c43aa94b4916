/**
 * Flow control on its own, over the real in-memory layer and a socket that records pause/resume:
 * each of the three sources is held back at HIGH_WATER queued tasks and flows again once the
 * consumer catches up, nothing is lost or reordered, and `accepting` is a pure reading.
 */
import t, { type Test } from 'tap'
import { InMemoryChannelLayer } from '../../lib/index.js'
import type { ChannelLayer, ChannelListener, ChannelSink, LayerMessage } from '../../lib/layers/types.js'
import { FlowControl, HIGH_WATER } from '../../lib/connection/flow-control.js'
import { TaskQueue } from '../../lib/connection/task-queue.js'
import { contractOnly } from '../helpers/layers.js'
import { eventually } from '../helpers/app.js'

type Task = { frame: number } | LayerMessage

/** A queue whose consumer is held while `hold()` is in force, a flow control over it, a recording socket. */
function harness () {
  const handled: Task[] = []
  const failures: unknown[] = []
  let gate: Promise<void> | undefined
  let open: (() => void) | undefined
  let flow!: FlowControl<Task>
  const queue = new TaskQueue<Task>({
    runTask (task) { handled.push(task); return gate },
    taskFailed () {},
    afterTask () { flow.afterTask() }
  })
  const owner = { stillHere: 0, dropped: 0 }
  flow = new FlowControl<Task>(queue, {
    layerFailed: err => failures.push(err),
    overLimit: () => failures.push('over the limit'),
    whenUncongested: () => undefined,
    stillHere: () => { owner.stillHere++ },
    droppedAfterEnd: () => { owner.dropped++ }
  })
  const socket = { pauses: 0, resumes: 0, pause () { this.pauses++ }, resume () { this.resumes++ } }
  return {
    handled,
    failures,
    queue,
    flow,
    socket,
    owner,
    /** Every task from now on waits until release(). */
    hold () { gate = new Promise(resolve => { open = resolve }) },
    release () { const done = open; gate = undefined; done?.() }
  }
}

/** Starts the harness' flow control and queue over a new channel of `layer`; returns the channel. */
async function startOn (h: ReturnType<typeof harness>, layer: ChannelLayer): Promise<string> {
  const channel = await layer.newChannel()
  h.flow.start(h.socket, layer, channel)
  h.queue.start()
  return channel
}

/** An in-memory layer closed when the test ends, the harness started on a new channel of it, held. */
async function heldOnMemory (t: Test, h: ReturnType<typeof harness>): Promise<{ layer: InMemoryChannelLayer, channel: string }> {
  const layer = new InMemoryChannelLayer()
  t.teardown(() => layer.close())
  const channel = await startOn(h, layer)
  h.hold()
  return { layer, channel }
}

/** Counts the listener's resume() calls made by the flow control. */
function countingResumes (layer: InMemoryChannelLayer): { resumes: number } {
  const counter = { resumes: 0 }
  const listen = layer.listen.bind(layer)
  layer.listen = (channel: string, sink: ChannelSink): ChannelListener => {
    const listener = listen(channel, sink)
    return { resume () { counter.resumes++; listener.resume() }, close () { listener.close() } }
  }
  return counter
}

t.test('client frames: reads pause once at HIGH_WATER queued tasks and resume once below it; all handled in order', async t => {
  const h = harness()
  await heldOnMemory(t, h)
  const FRAMES = HIGH_WATER + 10
  for (let frame = 0; frame < FRAMES; frame++) h.flow.fromClient({ frame })
  t.equal(h.socket.pauses, 1, 'paused once, not once per frame')
  t.equal(h.flow.readsPaused, true)
  t.equal(h.socket.resumes, 0)
  t.equal(h.owner.stillHere, 1, 'the owner is told at once that frames are not read')
  await eventually(() => h.owner.stillHere === 2, 3000)
  t.pass('and again half a second later, while that lasts')
  h.release()
  await eventually(() => h.handled.length === FRAMES)
  t.same(h.handled, Array.from({ length: FRAMES }, (_, frame) => ({ frame })), 'every frame, in order')
  t.equal(h.socket.resumes, 1, 'resumed once')
  t.equal(h.flow.readsPaused, false)
  const told = h.owner.stillHere
  await new Promise(resolve => setTimeout(resolve, 700))
  t.equal(h.owner.stillHere, told, 'not any more once reading again')
})

t.test('frames ws hands over after reads paused wait outside the queue; layer messages waiting meanwhile take turns with them', async t => {
  const h = harness()
  const { layer, channel } = await heldOnMemory(t, h)
  // ws emits every frame of what it had read, paused or not: 1 in hand, 16 queued, 63 unread.
  const FRAMES = 80
  for (let frame = 0; frame < FRAMES; frame++) h.flow.fromClient({ frame })
  t.equal(h.queue.pending, HIGH_WATER, 'the queue holds HIGH_WATER frames, not all of them')
  t.equal(h.socket.pauses, 1)
  const MESSAGES = 20
  for (let n = 0; n < MESSAGES; n++) await layer.send(channel, { type: 'waited', n })
  h.release()
  await eventually(() => h.handled.length === FRAMES + MESSAGES)
  const order = h.handled.map(task => 'frame' in task ? `f${task.frame}` : `m${(task as unknown as { n: number }).n}`)
  t.same(order.filter(name => name[0] === 'f'), Array.from({ length: FRAMES }, (_, n) => `f${n}`), 'every frame, in order')
  t.same(order.filter(name => name[0] === 'm'), Array.from({ length: MESSAGES }, (_, n) => `m${n}`), 'every message, in order')
  const lastMessage = order.indexOf(`m${MESSAGES - 1}`)
  t.ok(lastMessage < order.indexOf(`f${FRAMES - 1}`), `the messages did not wait for every unread frame (the last at ${lastMessage} of ${order.length}: ${order.join(' ')})`)
  t.equal(h.socket.resumes, 1, 'reads resume once, when no frame is left unread')
  t.equal(h.flow.readsPaused, false)
})

t.test('a frame that finds the queue full of layer messages waits unread, and reads pause', async t => {
  const h = harness()
  const { layer, channel } = await heldOnMemory(t, h)
  for (let n = 0; n < 20; n++) await layer.send(channel, { type: 'first', n })
  t.equal(h.queue.pending, HIGH_WATER)
  for (let frame = 0; frame < 3; frame++) h.flow.fromClient({ frame })
  t.equal(h.queue.pending, HIGH_WATER, 'the frames are not queued past HIGH_WATER')
  t.equal(h.socket.pauses, 1, 'and the socket is no longer read')
  h.release()
  await eventually(() => h.handled.length === 23)
  t.same(h.handled.filter(task => 'frame' in task), [{ frame: 0 }, { frame: 1 }, { frame: 2 }], 'the frames are handled, in order')
  t.equal(h.socket.resumes, 1)
})

t.test('a pushing layer: accepting is a pure reading; messages past HIGH_WATER wait in the layer and come in order', async t => {
  const h = harness()
  const layer = new InMemoryChannelLayer()
  t.teardown(() => layer.close())
  const counter = countingResumes(layer)
  const channel = await startOn(h, layer)

  for (let n = 0; n < 40; n++) await layer.send(channel, { type: 'quick', n })
  t.equal(h.handled.length, 40, 'a consumer that keeps up takes every message at once')
  t.equal(counter.resumes, 0, 'and the listener is never resumed: it never held anything back')

  h.hold()
  const MESSAGES = 60
  for (let n = 0; n < MESSAGES; n++) await layer.send(channel, { type: 'slow', n })
  t.equal(h.queue.pending, HIGH_WATER, 'the queue stops at HIGH_WATER waiting tasks (one more is in hand)')
  t.ok(Array.from({ length: 100 }, () => h.flow.accepting).every(accepting => !accepting), 'a full queue does not accept, however often asked')
  t.equal(counter.resumes, 0, 'reading accepting changes nothing')
  h.release()
  await eventually(() => h.handled.length === 40 + MESSAGES)
  t.same(h.handled.slice(40).map(m => (m as unknown as { n: number }).n), Array.from({ length: MESSAGES }, (_, n) => n), 'all, in order')
  t.ok(counter.resumes > 0, `the listener was resumed after the queue had been full (${counter.resumes} times)`)
  t.equal(h.flow.accepting, true)
})

t.test('a layer that can only be polled: the pump waits at HIGH_WATER, then takes the rest in order', async t => {
  const h = harness()
  const inner = new InMemoryChannelLayer()
  t.teardown(() => inner.close())
  const layer: ChannelLayer = contractOnly(inner)
  const channel = await layer.newChannel()
  h.hold()
  h.flow.start(h.socket, layer, channel)
  h.queue.start()
  const MESSAGES = 50
  for (let n = 0; n < MESSAGES; n++) await layer.send(channel, { type: 'polled', n })
  await eventually(() => h.queue.pending >= HIGH_WATER)
  await new Promise(resolve => setTimeout(resolve, 20))
  t.equal(h.queue.pending, HIGH_WATER, 'the pump stopped taking messages')
  h.release()
  await eventually(() => h.handled.length === MESSAGES)
  t.same(h.handled.map(m => (m as unknown as { n: number }).n), Array.from({ length: MESSAGES }, (_, n) => n))
})

for (const [kind, wrap] of [
  ['a pushing layer', (inner: InMemoryChannelLayer): ChannelLayer => inner],
  ['a polled layer', contractOnly]
] as const) {
  t.test(`${kind}: after stop() nothing more is taken; until release() a pushing layer's messages are dropped, then they wait in the layer`, async t => {
    const h = harness()
    const inner = new InMemoryChannelLayer()
    t.teardown(() => inner.close())
    const layer = wrap(inner)
    const channel = await startOn(h, layer)
    await layer.send(channel, { type: 'before' })
    await eventually(() => h.handled.length === 1)
    h.flow.stop()
    await new Promise(resolve => setImmediate(resolve))
    await layer.send(channel, { type: 'while ending' })
    await new Promise(resolve => setTimeout(resolve, 20))
    t.same(h.handled, [{ type: 'before' }], 'nothing taken after stop()')
    h.flow.release()
    await layer.send(channel, { type: 'after' })
    const next = await layer.receive(channel)
    if (kind === 'a pushing layer') {
      t.same(next, { type: 'after' }, 'what came while the connection ended was dropped; after release() a message waits in the channel')
      t.equal(h.owner.dropped, 1, 'and the owner was told, to count it')
    } else {
      t.same(next, { type: 'while ending' }, 'a polled layer keeps what it was sent: the pump took nothing more')
    }
    t.same(h.failures, [], 'stopping is not a failure')
  })

  t.test(`${kind}: the layer closing under the connection is reported once`, async t => {
    const h = harness()
    const inner = new InMemoryChannelLayer()
    const layer = wrap(inner)
    await startOn(h, layer)
    await inner.close()
    await eventually(() => h.failures.length > 0)
    await new Promise(resolve => setTimeout(resolve, 20))
    t.equal(h.failures.length, 1)
    t.match(h.failures[0], { code: 'FST_CHANNELS_LAYER_CLOSED' })
  })
}

t.test('a layer whose listen() throws is reported as a failure, not thrown', async t => {
  const h = harness()
  const layer = new InMemoryChannelLayer()
  t.teardown(() => layer.close())
  const channel = await layer.newChannel()
  layer.listen(channel, { accepting: true, push () {}, layerClosed () {} })
  t.doesNotThrow(() => h.flow.start(h.socket, layer, channel), 'a second listener on one channel')
  t.match(h.failures, [{ code: 'FST_CHANNELS_INVALID_OPTION' }])
})
