/**
 * What a consumer's sends, joins and leaves return: promises whose failure reaches the code that
 * awaits them — and never an unhandled rejection.
 *
 * These calls may be made without `await`: a handler that is a plain method sends so (the README
 * invites it: a send's promise is already settled when it succeeds), joins and leaves take effect
 * in call order awaited or not, and an `async` handler may simply forget. Left alone, such a
 * rejection would be unhandled, which stops a Node process by default: one client leaving while
 * a handler was still at work, or a join refused, could bring the server down. So when nothing
 * has waited on the promise (`await`, `then`, `catch`) by the end of the event loop's turn in
 * which it failed, the failure goes to its connection as a handler's throw does: a send that came
 * after the end is logged at debug; anything else is logged and closes the connection (1008 for
 * too many groups, 1011 for the app's bugs and the layer's failures).
 *
 * The promises a caller makes from them (`then`'s result, `Promise.all`) are ordinary ones, the
 * caller's to handle. A send that succeeds returns the one settled promise it always did: only a
 * failure, a join and a leave cost a promise of this kind.
 */

/** Where a failure nothing waited for is reported: the connection. */
export interface UnawaitedFailureOwner {
  taskFailed (err: unknown, what?: string): void
}

function ignore (): void {}

/**
 * A promise that knows whether anything waited on it. `await` of a promise that is not the
 * built-in `Promise` itself calls its `then`, as `catch`, `finally` and `Promise.all` do.
 */
class Watched<T> extends Promise<T> {
  // Promises derived from this one (`then`'s result) are ordinary ones.
  static override get [Symbol.species] (): PromiseConstructor {
    return Promise
  }

  waitedOn = false

  override then<R1 = T, R2 = never> (onFulfilled?: ((value: T) => R1 | PromiseLike<R1>) | null,
    onRejected?: ((reason: unknown) => R2 | PromiseLike<R2>) | null): Promise<R1 | R2> {
    this.waitedOn = true
    return super.then(onFulfilled, onRejected)
  }
}

/**
 * `promise` as its caller gets it; its failure is reported to `owner` as `what` once the turn
 * ends if nothing waited on it by then. A consumer that no connection runs (made by hand) has no
 * owner: `promise` as it is.
 */
export function watched<T> (promise: Promise<T>, owner: UnawaitedFailureOwner | undefined, what: string): Promise<T> {
  if (owner === undefined) return promise
  const result: Watched<T> = new Watched<T>((resolve, reject) => {
    promise.then(resolve, (err: unknown) => {
      reject(err)
      setImmediate(() => {
        if (!result.waitedOn) owner.taskFailed(err, what)
      })
    })
  })
  // Handled from the start (without counting as waited on): never an unhandled rejection.
  Promise.prototype.then.call(result, undefined, ignore)
  return result
}

const SEND = 'a send that nothing awaited'
export const ACCEPT = 'an accept() that nothing awaited'

/** A send that failed with `err`: a rejection for the caller, reported to `owner` if nothing waits on it. */
export function sendFailure (err: unknown, owner: UnawaitedFailureOwner | undefined, what = SEND): Promise<never> {
  return watched(Promise.reject(err), owner, what)
}
