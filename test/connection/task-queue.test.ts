/**
 * The ordered task queue on its own: order, start, re-entrant pushes, failures, and what it costs
 * (no promise for a synchronous task, one for an asynchronous one), counted with async_hooks.
 */
import t from 'tap'
import { createHook } from 'node:async_hooks'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { TaskQueue, type TaskRunner } from '../../lib/connection/task-queue.js'

type Step = () => PromiseLike<unknown> | undefined

/** A runner that records what happened, in order; the queue is watched unless `watched` is false. */
function recorder (watched = true) {
  const log: string[] = []
  const runner: TaskRunner<[string, Step]> = {
    runTask ([name, step]) { log.push(`run ${name}`); return step() },
    taskFailed (err) { log.push(`failed ${(err as Error).message}`) },
    afterTask () { log.push('after') }
  }
  const queue = new TaskQueue(runner)
  if (watched) queue.watch()
  return { log, queue }
}

const sync: Step = () => undefined

/** Counts the promises created from enable() until disable(). */
function promiseCounter () {
  let count = 0
  const hook = createHook({ init (_id, type) { if (type === 'PROMISE') count++ } })
  return { enable: () => hook.enable(), disable: () => hook.disable(), get count () { return count } }
}

t.test('nothing runs before start(); then every task runs in order, synchronously', async t => {
  const { log, queue } = recorder()
  queue.push(['a', sync])
  queue.push(['b', sync])
  t.same(log, [], 'queued, not run')
  t.equal(queue.pending, 2)
  queue.start()
  t.same(log, ['run a', 'after', 'run b', 'after'], 'both ran inside start()')
  t.equal(queue.pending, 0)
  queue.push(['c', sync])
  t.same(log.slice(4), ['run c', 'after'], 'a task pushed to an idle started queue runs inside push()')
})

t.test('a task pushed from inside a running task runs after it, not nested in it', async t => {
  const { log, queue } = recorder()
  queue.start()
  queue.push(['outer', () => { queue.push(['inner', sync]); log.push('outer done'); return undefined }])
  t.same(log, ['run outer', 'outer done', 'after', 'run inner', 'after'])
})

t.test('an asynchronous task holds back the next until it settles; afterTask follows completion', async t => {
  const { log, queue } = recorder()
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  queue.start()
  queue.push(['slow', () => gate])
  queue.push(['next', sync])
  t.same(log, ['run slow'], 'next waits')
  t.equal(queue.pending, 1)
  release()
  await gate
  await new Promise(resolve => setImmediate(resolve))
  t.same(log, ['run slow', 'after', 'run next', 'after'])
})

t.test('afterTask() is heard only while the queue is watched', async t => {
  const { log, queue } = recorder(false)
  queue.start()
  queue.push(['quiet', sync])
  queue.push(['quiet async', () => Promise.resolve()])
  await new Promise(resolve => setImmediate(resolve))
  t.same(log, ['run quiet', 'run quiet async'], 'not watched: no afterTask')
  queue.watch()
  queue.push(['watched', sync])
  queue.push(['watched async', () => Promise.resolve()])
  await new Promise(resolve => setImmediate(resolve))
  queue.unwatch()
  queue.push(['quiet again', sync])
  t.same(log.slice(2), ['run watched', 'after', 'run watched async', 'after', 'run quiet again'])
})

t.test('a rejection or a broken thenable fails only that task: the queue goes on, push() never throws', async t => {
  const { log, queue } = recorder()
  queue.start()
  const broken = { then () { throw new Error('broken thenable') } }
  t.doesNotThrow(() => queue.push(['broken', () => broken as unknown as PromiseLike<unknown>]))
  queue.push(['rejects', () => Promise.reject(new Error('handler bug'))])
  queue.push(['last', sync])
  await new Promise(resolve => setImmediate(resolve))
  t.same(log, [
    'run broken', 'failed broken thenable', 'after',
    'run rejects', 'failed handler bug', 'after',
    'run last', 'after'
  ])
})

t.test('cost: no promise for synchronous tasks, one .then per asynchronous task', async t => {
  const { queue } = recorder()
  queue.start()
  const syncCounter = promiseCounter()
  syncCounter.enable()
  for (let i = 0; i < 100; i++) queue.push([`s${i}`, sync])
  syncCounter.disable()
  t.equal(syncCounter.count, 0, '100 synchronous tasks, no promise')

  const TASKS = 10
  const done = Promise.resolve()
  const counter = promiseCounter()
  let settled = 0
  let finish!: () => void
  const finished = new Promise<void>(resolve => { finish = resolve })
  const asyncQueue = new TaskQueue<number>({
    runTask () { return done },
    taskFailed () {},
    afterTask () {
      // Stop counting inside the last callback, before anything of the test's own runs.
      if (++settled === TASKS) { counter.disable(); finish() }
    }
  })
  asyncQueue.watch()
  asyncQueue.start()
  // Counting starts in a later turn, after this test has begun to await.
  setImmediate(() => {
    counter.enable()
    for (let i = 0; i < TASKS; i++) asyncQueue.push(i)
  })
  await finished
  t.equal(counter.count, TASKS, `${TASKS} asynchronous tasks, one promise each`)
})

t.test('a task\'s detail reaches the runner beside it, and nothing else', async t => {
  const seen: Array<[string, number | undefined]> = []
  const queue = new TaskQueue<string, number>({
    runTask (task, detail) { seen.push([task, detail]); return undefined },
    taskFailed () {},
    afterTask () {}
  })
  queue.push('with', 7)
  queue.push('without')
  queue.start()
  queue.push('later', 8)
  t.same(seen, [['with', 7], ['without', undefined], ['later', 8]])
})

/** Runs `total` asynchronous tasks with three always waiting, as for a consumer a little behind; the heap's growth. */
async function neverEmpty (total: number, gc: () => void): Promise<{ grown: number, pending: number }> {
  let ran = 0
  let finished: () => void = () => {}
  const done = new Promise<void>(resolve => { finished = resolve })
  const queue: TaskQueue<Step> = new TaskQueue<Step>({ runTask: step => step(), taskFailed () {}, afterTask () {} })
  // Each task queues the next before it settles.
  const step: Step = () => {
    ran++
    if (ran + 3 <= total) queue.push(step)
    if (ran === total) finished()
    return Promise.resolve()
  }
  for (let i = 0; i < 3; i++) queue.push(step)
  gc()
  const before = process.memoryUsage().heapUsed
  queue.start()
  await done
  gc()
  return { grown: process.memoryUsage().heapUsed - before, pending: queue.pending }
}

t.test('a queue that never empties keeps what waits, not every task it ever ran', async t => {
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  await neverEmpty(50_000, gc) // warm-up: what compiling and the test runner add is not the queue's
  const total = 1_200_000
  // The least of three runs: the heap also grows by a few MB for reasons not the queue's, whatever
  // the number of tasks (seen: 2.6 MB most runs on Node 20, 5.8–6.3 MB in some, and in every run
  // on Node 24), which kept tasks would add to in every run.
  const runs = [await neverEmpty(total, gc), await neverEmpty(total, gc), await neverEmpty(total, gc)]
  t.ok(runs.every(run => run.pending <= 3), `${runs.map(run => run.pending).join(', ')} still waiting`)
  const grown = Math.min(...runs.map(run => run.grown))
  // Kept, each task would hold 16 bytes of the array at least: 19.2 MB here.
  t.ok(grown < 10_000_000, `the heap grew ${grown} bytes over ${total} tasks (the least of ${runs.map(run => run.grown).join(', ')})`)
})
