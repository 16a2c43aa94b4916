/**
 * Tasks run one at a time, in the order they were queued: a connection's client frames, layer
 * messages and its end. A task that completes synchronously is followed by the next at once, with
 * no promise at all; one that returns a promise resumes the loop when it settles, with one `.then`
 * per task and no other promise. Nothing runs before `start()`.
 *
 * The queue knows nothing of what a task means: its owner gives it a `TaskRunner`.
 */

export interface TaskRunner<Task> {
  /** Runs one task; returns what to wait for when it is asynchronous. */
  runTask (task: Task): PromiseLike<unknown> | undefined
  /** The promise `runTask` returned rejected (or was a thenable that broke). */
  taskFailed (err: unknown): void
  /** Called after every task, once it has completed. */
  afterTask (): void
}

export class TaskQueue<Task> {
  readonly #runner: TaskRunner<Task>
  #queue: Array<Task | undefined> = []
  #head = 0
  #draining = false
  #started = false

  constructor (runner: TaskRunner<Task>) {
    this.#runner = runner
  }

  /** Tasks queued and not yet taken. */
  get pending (): number {
    return this.#queue.length - this.#head
  }

  push (task: Task): void {
    this.#queue.push(task)
    if (this.#started && !this.#draining) this.#drain()
  }

  start (): void {
    this.#started = true
    if (!this.#draining) this.#drain()
  }

  #drain (): void {
    this.#draining = true
    const runner = this.#runner
    while (this.#head < this.#queue.length) {
      const task = this.#queue[this.#head] as Task
      this.#queue[this.#head++] = undefined
      const pending = runner.runTask(task)
      if (pending !== undefined) {
        // Promise.resolve: a native promise as it is; any other thenable adopted safely (a `then`
        // that throws becomes a rejection instead of an exception in whoever queued the task).
        Promise.resolve(pending).then(this.#taskDone, this.#taskRejected)
        return
      }
      runner.afterTask()
    }
    this.#queue.length = 0
    this.#head = 0
    this.#draining = false
  }

  readonly #taskDone = (): void => {
    this.#runner.afterTask()
    this.#drain()
  }

  readonly #taskRejected = (err: unknown): void => {
    this.#runner.taskFailed(err)
    this.#taskDone()
  }
}
