/**
 * Work that lives exactly as long as one connection: `this.signal`, aborted as soon as the
 * connection starts to end (before `disconnect()` runs), and `this.spawn(fn)`, a background task
 * that runs beside the ordered handler queue — a clock, a poll, a stream to relay.
 *
 * The connection waits for every spawned task to settle before `disconnect()` and before it frees
 * the layer, so a task that joins a group on its way out cannot leave a membership behind.
 *
 * Made only when a consumer reads `signal` or calls `spawn()`: an AbortController per idle
 * connection would cost memory that most connections never use.
 */
import type { Reporter } from './tasks.js'
import { ConnectionClosedError, InvalidOptionError } from '../errors.js'

export type SpawnedTask = (signal: AbortSignal) => Promise<void> | void

// How long the end of a connection waits for its tasks before it says so (and goes on waiting).
const STUCK_AFTER_MS = 5000

export interface ScopedTasksOwner extends Reporter {
  /** A task failed while the connection was live: it closes as after a failing handler. */
  spawnFailed (err: unknown): void
}

export class ScopedTasks {
  readonly #owner: ScopedTasksOwner
  readonly #controller = new AbortController()
  readonly #running = new Set<Promise<void>>()
  readonly #stuckAfterMs: number

  constructor (owner: ScopedTasksOwner, stuckAfterMs = STUCK_AFTER_MS) {
    this.#owner = owner
    this.#stuckAfterMs = stuckAfterMs
  }

  get signal (): AbortSignal {
    return this.#controller.signal
  }

  /** Starts `fn(signal)` now; its failure is reported to the owner, never left unhandled. */
  spawn (fn: SpawnedTask): void {
    if (typeof fn !== 'function') {
      throw new InvalidOptionError(`spawn(fn) takes a function (signal) => Promise<void>, got ${fn === null ? 'null' : typeof fn}`)
    }
    const signal = this.signal
    if (signal.aborted) throw new ConnectionClosedError(this.#owner.channelName, 'spawn() is too late')
    const task: Promise<void> = run(fn, signal).then(undefined, (err: unknown) => { this.#failed(err) })
    this.#running.add(task)
    const forget = (): void => { this.#running.delete(task) }
    task.then(forget, forget)
  }

  /** The connection is ending: every task is told to stop. */
  abort (): void {
    if (!this.signal.aborted) this.#controller.abort(new ConnectionClosedError(this.#owner.channelName, 'its tasks are aborted'))
  }

  /**
   * Resolves once every task spawned so far has settled. A task that ignores the signal holds up
   * `disconnect()` and `app.close()`: that is logged, once, so it can be found.
   */
  async settled (): Promise<void> {
    if (this.#running.size === 0) return
    const timer = setTimeout(() => {
      this.#owner.log.warn({ channel: this.#owner.channelName, tasks: this.#running.size },
        `a spawned task has not ended ${this.#stuckAfterMs} ms after its connection did; disconnect() waits for it: let it end when its signal aborts`)
    }, this.#stuckAfterMs)
    timer.unref()
    try {
      await Promise.all(this.#running)
    } finally {
      clearTimeout(timer)
    }
  }

  #failed (err: unknown): void {
    if (!stoppedWithConnection(err, this.signal.aborted, this.#owner, 'spawned task stopped with its connection')) this.#owner.spawnFailed(err)
  }
}

/** A synchronous throw becomes a rejection like any other. */
async function run (fn: SpawnedTask, signal: AbortSignal): Promise<void> {
  await fn(signal)
}

/**
 * Whether `err` only says that the connection ended under the code that threw it: a send that
 * came too late, or an operation aborted by the connection's signal (Node's AbortError carries
 * the signal's reason as its `cause`; fetch rejects with the reason itself).
 */
export function endedWithConnection (err: unknown): boolean {
  if (err instanceof ConnectionClosedError) return true
  return err instanceof Error && err.name === 'AbortError' && err.cause instanceof ConnectionClosedError
}

/**
 * A failure that only lost the race with its connection's end (the connection has `ended`, and
 * `err` says so: see above) is no failure: logged at debug as `message`, and true.
 */
export function stoppedWithConnection (err: unknown, ended: boolean, reporter: Reporter, message: string): boolean {
  if (!ended || !endedWithConnection(err)) return false
  reporter.log.debug({ err, channel: reporter.channelName }, message)
  return true
}
