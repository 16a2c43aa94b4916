/**
 * Tasks run one at a time, in the order they were queued: a connection's client frames, layer
 * messages and its end. A task that completes synchronously is followed by the next at once; one
 * that returns a promise resumes the loop when it settles, with one `.then` per task and no other
 * promise. Nothing runs before `startTasks()`.
 */
export abstract class OrderedTasks<Task> {
  #queue: Array<Task | undefined> = []
  #head = 0
  #draining = false
  #started = false

  /** Tasks queued and not yet taken. */
  protected get pendingTasks (): number {
    return this.#queue.length - this.#head
  }

  protected enqueueTask (task: Task): void {
    this.#queue.push(task)
    if (this.#started && !this.#draining) this.#drain()
  }

  protected startTasks (): void {
    this.#started = true
    if (!this.#draining) this.#drain()
  }

  /** Runs one task; returns what to wait for when it is asynchronous. A rejection goes to `taskFailed`. */
  protected abstract runTask (task: Task): PromiseLike<unknown> | undefined
  protected abstract taskFailed (err: unknown): void
  /** Called after every task, once it has completed. */
  protected abstract afterTask (): void

  #drain (): void {
    this.#draining = true
    while (this.#head < this.#queue.length) {
      const task = this.#queue[this.#head] as Task
      this.#queue[this.#head++] = undefined
      const pending = this.runTask(task)
      if (pending !== undefined) {
        // Promise.resolve: a native promise as it is; any other thenable adopted safely (a `then`
        // that throws becomes a rejection instead of an exception in whoever queued the task).
        Promise.resolve(pending).then(this.#taskDone, this.#taskRejected)
        return
      }
      this.afterTask()
    }
    this.#queue.length = 0
    this.#head = 0
    this.#draining = false
  }

  readonly #taskDone = (): void => {
    this.afterTask()
    this.#drain()
  }

  readonly #taskRejected = (err: unknown): void => {
    this.taskFailed(err)
    this.#taskDone()
  }
}
