/**
 * The heartbeat on its own: the per-connection policy (`beat()`) against a recording peer, and
 * the scheduler's slices. The same behaviour through real sockets is in test/limits.test.ts.
 */
import t from 'tap'
import { beat, heartbeatSlot, startHeartbeat, type Beating } from '../../lib/connection/heartbeat.js'
import { ConnectionSet } from '../../lib/connection/connection-set.js'
import { eventually, sleep } from '../helpers/app.js'

/** A peer that records pings and termination; `answers` makes it pong at once. */
function peer (answers = false) {
  const p = {
    heartbeatSlot: heartbeatSlot(),
    isOpen: true,
    readsPaused: false,
    awaitingPong: false,
    pings: 0,
    terminated: false,
    sendPing () {
      p.pings++
      if (answers) p.awaitingPong = false
    },
    terminate () { p.terminated = true; p.isOpen = false }
  }
  return p satisfies Beating
}

const twoTurns = async (): Promise<void> => {
  await new Promise(resolve => setImmediate(resolve))
  await new Promise(resolve => setImmediate(resolve))
  await new Promise(resolve => setImmediate(resolve))
}

t.test('a peer that answered is pinged again', async t => {
  const p = peer()
  beat(p)
  t.equal(p.pings, 1)
  t.equal(p.awaitingPong, true, 'a pong is now expected')
  p.awaitingPong = false // the pong
  beat(p)
  t.equal(p.pings, 2)
  t.notOk(p.terminated)
})

t.test('a peer that did not answer is terminated, but only after two turns of reading', async t => {
  const p = peer()
  beat(p)
  beat(p)
  t.notOk(p.terminated, 'not judged within the tick')
  await twoTurns()
  t.ok(p.terminated, 'terminated')
  t.equal(p.pings, 1, 'and not pinged again')
})

t.test('a pong read in the turns after a late tick saves the peer', async t => {
  const p = peer()
  beat(p)
  beat(p)
  setImmediate(() => { p.awaitingPong = false }) // the pong was waiting in the socket
  await twoTurns()
  t.notOk(p.terminated)
  t.equal(p.pings, 2, 'pinged again instead')
})

t.test('a peer whose reads are paused for backpressure is never blamed', async t => {
  const p = peer()
  beat(p)
  p.readsPaused = true
  beat(p)
  t.equal(p.awaitingPong, false, 'its missing pong is forgiven')
  t.equal(p.pings, 1, 'and it is not pinged while paused')
  await twoTurns()
  t.notOk(p.terminated)

  const q = peer()
  beat(q)
  beat(q)
  q.readsPaused = true // paused between the tick and the judgement
  await twoTurns()
  t.notOk(q.terminated, 'paused before the judgement: pinged instead of terminated')
  t.equal(q.pings, 2)
})

t.test('a connection that is not open is left alone, also when it ends before the judgement', async t => {
  const p = peer()
  p.isOpen = false
  beat(p)
  t.equal(p.pings, 0)

  const q = peer()
  beat(q)
  beat(q)
  q.isOpen = false
  await twoTurns()
  t.notOk(q.terminated)
  t.equal(q.pings, 1)
})

t.test('the scheduler: each tick pings one slice, slices alternate, every peer once per interval; stop() stops', async t => {
  // 500 ms: two slices, a tick every 250 ms.
  const peers = Array.from({ length: 20 }, () => peer(true))
  // Pings of one tick happen in one macrotask: group them by turn.
  const ticks: Array<Set<number>> = []
  let current: Set<number> | null = null
  for (const [i, p] of peers.entries()) {
    const send = p.sendPing
    p.sendPing = () => {
      if (current === null) {
        current = new Set()
        ticks.push(current)
        setImmediate(() => { current = null })
      }
      current.add(i)
      send()
    }
  }
  const connections = new ConnectionSet<Beating>()
  for (const p of peers) connections.add(p)
  const stop = startHeartbeat(connections, 500)
  await eventually(() => ticks.length >= 4, 5000)
  stop()
  const parity = (tick: Set<number>): Set<number> => new Set([...tick].map(i => peers[i].heartbeatSlot % 2))
  for (const tick of ticks.slice(0, 4)) {
    t.equal(tick.size, 10, 'a tick pings half of the peers')
    t.equal(parity(tick).size, 1, 'all of one slice')
  }
  t.not([...parity(ticks[0])][0], [...parity(ticks[1])][0], 'the next tick pings the other slice')
  t.same([...parity(ticks[0])], [...parity(ticks[2])], 'and then the first again')
  t.ok(peers.every(p => p.pings === 2), 'after two intervals, two pings each')
  const seen = ticks.length
  await sleep(600)
  t.equal(ticks.length, seen, 'no tick after stop()')
})

t.test('the scheduler pings the connections of the set: one deleted from it is pinged no more', async t => {
  // 250 ms: one slice, every peer at each tick.
  const kept = peer(true)
  const gone = peer(true)
  const connections = new ConnectionSet<Beating>()
  connections.add(kept)
  connections.add(gone)
  const stop = startHeartbeat(connections, 250)
  t.teardown(stop)
  await eventually(() => kept.pings >= 1 && gone.pings >= 1, 5000)
  connections.delete(gone)
  const before = gone.pings
  await eventually(() => kept.pings >= 3, 5000)
  t.equal(gone.pings, before, 'not pinged after it left the set')
})

t.test('a connection set counts each connection once and yields each of them', async t => {
  const peers = Array.from({ length: 300 }, () => peer())
  const connections = new ConnectionSet<Beating>()
  for (const p of peers) connections.add(p)
  connections.add(peers[0])
  t.equal(connections.size, 300, 'added twice, counted once')
  connections.delete(peers[1])
  connections.delete(peers[1])
  t.equal(connections.size, 299, 'deleted twice, counted once')
  const seen = [...connections]
  t.equal(seen.length, 299)
  t.equal(new Set(seen).size, 299, 'each once')
  t.notOk(seen.includes(peers[1]), 'not the deleted one')
})
