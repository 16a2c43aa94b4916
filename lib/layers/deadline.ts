import { LayerTimeoutError } from '../errors.js'
import { MAX_TIMER_MS } from './arguments.js'

const noop = (): void => {}

/**
 * Settles like `promise`, or rejects with LayerTimeoutError at `deadline` (performance.now() ms);
 * `timeout` is what the error reports. The abandoned promise's rejection is absorbed, never unhandled.
 *
 * The deadline is judged after the I/O the process has already received: a process that was busy
 * past it (a long synchronous stretch, an overloaded event loop) finds the expired timer and the
 * answer both waiting, and timers run before I/O callbacks in a turn. So the timer only schedules
 * the rejection for after this turn's I/O (setImmediate): an answer already there wins.
 */
export function withDeadline<T> (promise: Promise<T>, deadline: number, what: string, timeout: number): Promise<T> {
  const left = deadline - performance.now()
  if (left <= 0) {
    promise.catch(noop)
    return Promise.reject(new LayerTimeoutError(what, timeout))
  }
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      setImmediate(() => {
        promise.catch(noop)
        reject(new LayerTimeoutError(what, timeout))
      })
      // A deadline past what a timer holds (a `timeout` near its maximum plus a pop's second) is
      // the longest a timer waits: Node would fire a longer one after 1 ms.
    }, Math.min(left, MAX_TIMER_MS))
    promise.then(value => {
      clearTimeout(timer)
      resolve(value)
    }, (err: unknown) => {
      clearTimeout(timer)
      reject(err)
    })
  })
}

/** `withDeadline` from now. */
export function withTimeout<T> (promise: Promise<T>, timeout: number, what: string): Promise<T> {
  return withDeadline(promise, performance.now() + timeout, what, timeout)
}

/** Whole milliseconds, at least one: what a backend's expiry takes. */
export function ttl (ms: number): number {
  return Math.max(1, Math.ceil(ms))
}
