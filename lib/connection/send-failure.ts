/**
 * What a consumer's send returns when it fails (`send()`, `sendJson()`, the HTTP consumer's
 * `sendHeaders()`, `sendBody()`, `sendEvent()`, and `accept()`): a promise rejected with the
 * error, for the code that awaits it — and never an unhandled rejection.
 *
 * A send may be called without `await`: a handler that is a plain method does so (the README
 * invites it: a send's promise is already settled when it succeeds), and so does an `async` one
 * that forgets to. Left alone, its rejection would be unhandled, which stops a Node process by
 * default: one client leaving while a handler was still at work could bring the server down. So
 * when nothing has waited on the promise (`await`, `then`, `catch`) by the end of the event
 * loop's turn, the failure goes to its connection as a handler's throw does: a send that came
 * after the end is logged at debug; anything else (content that cannot be sent) is logged at error
 * and closes the connection with 1011.
 *
 * Only a failure costs anything: a send that succeeds returns the one settled promise it always did.
 */

/** Where a failure nothing waited for is reported: the connection. */
export interface SendFailureOwner {
  taskFailed (err: unknown, what?: string): void
}

const WHAT = 'a send that nothing awaited'

function ignore (): void {}

/**
 * A promise that knows whether anything waited on it. `await` of a promise that is not the
 * built-in `Promise` itself calls its `then`, as `catch`, `finally` and `Promise.all` do.
 */
class SendFailure extends Promise<never> {
  // Promises derived from this one (`then`'s result) are ordinary ones.
  static override get [Symbol.species] (): PromiseConstructor {
    return Promise
  }

  waitedOn = false

  override then<T = never, U = never> (onFulfilled?: ((value: never) => T | PromiseLike<T>) | null,
    onRejected?: ((reason: unknown) => U | PromiseLike<U>) | null): Promise<T | U> {
    this.waitedOn = true
    return super.then(onFulfilled, onRejected)
  }
}

/**
 * A rejection with `err` for the caller; reported to `owner` once the turn ends if nothing waited
 * on it. A consumer that no connection runs (made by hand) has no owner: a plain rejection.
 */
export function sendFailure (err: unknown, owner: SendFailureOwner | undefined): Promise<never> {
  if (owner === undefined) return Promise.reject(err)
  const failure = new SendFailure((resolve, reject) => { reject(err) })
  // Handled from the start (without counting as waited on): never an unhandled rejection.
  Promise.prototype.then.call(failure, undefined, ignore)
  setImmediate(() => {
    if (!failure.waitedOn) owner.taskFailed(err, WHAT)
  })
  return failure
}
