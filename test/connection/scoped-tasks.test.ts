/**
 * Connection-scoped tasks on their own: what `spawn()` runs, what the signal tells it, which
 * failures count as failures, and that `settled()` waits for every task, also one that ignores
 * the signal. The same inside a connection: test/connection/connection.test.ts and
 * test/connection-tasks.test.ts.
 */
import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyBaseLogger } from 'fastify'
import { ScopedTasks, endedWithConnection, type ScopedTasksOwner } from '../../lib/connection/scoped-tasks.js'
import { ConnectionClosedError, InvalidOptionError } from '../../lib/errors.js'

function owner () {
  const logs: Array<{ level: string, msg: string }> = []
  const failures: unknown[] = []
  const log = {
    debug: (_obj: object, msg: string) => logs.push({ level: 'debug', msg }),
    warn: (_obj: object, msg: string) => logs.push({ level: 'warn', msg }),
    error: (_obj: object, msg: string) => logs.push({ level: 'error', msg })
  } as unknown as FastifyBaseLogger
  const o: ScopedTasksOwner = { log, channelName: 'specific!test', spawnFailed: err => { failures.push(err) } }
  return { owner: o, logs, failures }
}

t.test('a task runs at once with the signal, and ends quietly when the signal aborts its wait', async t => {
  const { owner: o, logs, failures } = owner()
  const tasks = new ScopedTasks(o)
  let ticks = 0
  let seen: AbortSignal | undefined
  tasks.spawn(async signal => {
    seen = signal
    for (;;) {
      ticks++
      await sleep(5, undefined, { signal })
    }
  })
  t.equal(ticks, 1, 'started synchronously, up to its first await')
  t.equal(seen, tasks.signal)
  await sleep(30)
  t.ok(ticks > 1, 'it keeps running')
  tasks.abort()
  t.ok(tasks.signal.aborted)
  t.ok(tasks.signal.reason instanceof ConnectionClosedError, 'the reason is a ConnectionClosedError')
  t.equal((tasks.signal.reason as { code: string }).code, 'FST_CHANNELS_CONNECTION_CLOSED')
  await tasks.settled()
  const stopped = ticks
  await sleep(20)
  t.equal(ticks, stopped, 'it stopped')
  t.same(failures, [], 'an aborted wait is no failure')
  t.same(logs, [{ level: 'debug', msg: 'spawned task stopped with its connection' }])
})

t.test('a task that fails while the connection is live is reported to the owner, sync throws included', async t => {
  const { owner: o, failures, logs } = owner()
  const tasks = new ScopedTasks(o)
  tasks.spawn(() => { throw new Error('sync bug') })
  tasks.spawn(async () => { await sleep(1); throw new Error('async bug') })
  await tasks.settled()
  t.same(failures.map(e => (e as Error).message), ['sync bug', 'async bug'])
  t.same(logs, [])
})

t.test('after the end, a real error is still a failure; a ConnectionClosedError is not', async t => {
  const { owner: o, failures } = owner()
  const tasks = new ScopedTasks(o)
  tasks.spawn(async signal => {
    await new Promise(resolve => signal.addEventListener('abort', resolve))
    throw new Error('cleanup bug')
  })
  tasks.spawn(async signal => {
    await new Promise(resolve => signal.addEventListener('abort', resolve))
    signal.throwIfAborted()
  })
  tasks.abort()
  await tasks.settled()
  t.same(failures.map(e => (e as Error).message), ['cleanup bug'])
})

t.test('bad calls: spawn() with a non-function, or after the end, throws a typed error and runs nothing', async t => {
  const { owner: o } = owner()
  const tasks = new ScopedTasks(o)
  for (const bad of [undefined, null, 'fn', 42, {}, Promise.resolve()]) {
    t.throws(() => tasks.spawn(bad as never), { code: 'FST_CHANNELS_INVALID_OPTION' }, String(bad))
  }
  t.throws(() => tasks.spawn(null as never), InvalidOptionError)
  tasks.abort()
  let ran = false
  t.throws(() => tasks.spawn(async () => { ran = true }), { code: 'FST_CHANNELS_CONNECTION_CLOSED' })
  t.notOk(ran)
  tasks.abort()
  t.pass('abort() twice is harmless')
})

t.test('settled() waits for every task, also one that ignores the signal, and says so when that takes long', async t => {
  const { owner: o, logs } = owner()
  const tasks = new ScopedTasks(o, 5)
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  let done = false
  tasks.spawn(async () => { await gate; done = true })
  tasks.abort()
  let settled = false
  const waiting = tasks.settled().then(() => { settled = true })
  await sleep(10)
  t.notOk(settled, 'still waiting for the task')
  t.match(logs, [{ level: 'warn', msg: /a spawned task has not ended 5 ms after its connection did/ }], 'a stuck task is reported, once')
  release()
  await waiting
  t.ok(done)
  t.equal(logs.length, 1)
})

t.test('endedWithConnection: what counts as "the connection ended under it"', async t => {
  const reason = new ConnectionClosedError('c', 'x')
  const timerAbort = await sleep(1000, undefined, { signal: AbortSignal.abort(reason) }).catch((err: unknown) => err)
  t.ok(endedWithConnection(reason), 'the error itself')
  t.ok(endedWithConnection(timerAbort), 'Node\'s AbortError caused by it')
  t.notOk(endedWithConnection(await sleep(1000, undefined, { signal: AbortSignal.abort() }).catch((err: unknown) => err)), 'an abort for another reason')
  t.notOk(endedWithConnection(new Error('boom')))
  t.notOk(endedWithConnection(undefined))
})
