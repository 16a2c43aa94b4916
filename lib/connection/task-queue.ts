/**
 * Tasks run one at a time, in the order they were queued: a connection's client frames, layer
 * messages and its end. A task that completes synchronously is followed by the next at once, with
 * no promise at all; one that returns a promise resumes the loop when it settles, with one `.then`
 * per task and no other promise. Nothing runs before `start()`.
 *
 * The queue knows nothing of what a task means: its owner gives it a `TaskRunner`. A task may
 * come with a detail (how a layer message came), kept next to it in the one array rather than in
 * a wrapper: no allocation per task.
 */

export interface TaskRunner<Task, Detail = never> {
  /** Runs one task; returns what to wait for when it is asynchronous. */
  runTask (task: Task, detail: Detail | undefined): PromiseLike<unknown> | undefined
  /** The promise `runTask` returned rejected (or was a thenable that broke). */
  taskFailed (err: unknown): void
  /** Called after every task, once it has completed, while the queue is watched (`watch()`). */
  afterTask (): void
}

// Slots (two per task) taken from the front before the array is compacted.
const COMPACT_AFTER = 1024

export class TaskQueue<Task, Detail = never> {
  readonly #runner: TaskRunner<Task, Detail>
  // task, detail, task, detail, …: #head is the next task's index. Only while tasks wait: an idle
  // queue (most of them, most of the time) holds no array, and a delivery reads none.
  #queue: Array<Task | Detail | undefined> | null = null
  #head = 0
  // Tasks started so far: a task queued when `taken + pending` were has started once `taken` passes that.
  #taken = 0
  #draining = false
  #started = false
  // Whether the runner is told of each completed task: only while it waits for room (flow
  // control holds a source back), so a delivery to a connection that keeps up reads nothing else.
  #watched = false
  // A task's promise is awaited (the queue is busy across turns), and what runs once it completes.
  #inFlight = false
  #afterInFlight: (() => void) | null = null

  constructor (runner: TaskRunner<Task, Detail>) {
    this.#runner = runner
  }

  /** Tasks queued and not yet taken. */
  get pending (): number {
    const queue = this.#queue
    return queue === null ? 0 : (queue.length - this.#head) >> 1
  }

  /** How many tasks have started so far. */
  get taken (): number {
    return this.#taken
  }

  push (task: Task, detail?: Detail): void {
    if (!this.#started || this.#draining) {
      if (this.#queue === null) this.#queue = [task, detail]
      else this.#queue.push(task, detail)
      return
    }
    // Idle, so nothing is queued (a drain stops only once the queue is empty): the task runs at
    // once, never stored. Most deliveries find their connection idle.
    this.#draining = true
    if (this.#run(task, detail)) this.#drain()
  }

  /** `afterTask()` follows each completed task from now on, until `unwatch()`. */
  watch (): void {
    this.#watched = true
  }

  unwatch (): void {
    this.#watched = false
  }

  /**
   * `then` runs once the task whose promise the queue awaits has completed, before the next task
   * starts; false (and it never runs) when no task is awaited.
   */
  afterTaskInHand (then: () => void): boolean {
    if (!this.#inFlight) return false
    this.#afterInFlight = then
    return true
  }

  start (): void {
    this.#started = true
    if (!this.#draining) this.#drain()
  }

  /** Runs what is queued, until a task is asynchronous (the loop resumes when it settles) or none is left. */
  #drain (): void {
    this.#draining = true
    const queue = this.#queue
    if (queue !== null) {
      while (this.#head < queue.length) {
        const task = queue[this.#head] as Task
        const detail = queue[this.#head + 1] as Detail | undefined
        queue[this.#head++] = undefined
        queue[this.#head++] = undefined
        // A queue that never empties (a consumer always a little behind) would keep every slot it
        // ever used: once most of the array is behind the head, the rest moves to its start.
        if (this.#head >= COMPACT_AFTER && this.#head * 2 >= queue.length) {
          queue.splice(0, this.#head)
          this.#head = 0
        }
        if (!this.#run(task, detail)) return
      }
      this.#queue = null
      this.#head = 0
    }
    this.#draining = false
  }

  /** One task; true when it completed synchronously, false when the queue waits for its promise. */
  #run (task: Task, detail: Detail | undefined): boolean {
    this.#taken++
    const pending = this.#runner.runTask(task, detail)
    if (pending !== undefined) {
      // Promise.resolve: a native promise as it is; any other thenable adopted safely (a `then`
      // that throws becomes a rejection instead of an exception in whoever queued the task).
      Promise.resolve(pending).then(this.#taskDone ??= () => { this.#done() }, this.#taskRejected ??= (err: unknown) => { this.#failed(err) })
      this.#inFlight = true
      return false
    }
    if (this.#watched) this.#runner.afterTask()
    return true
  }

  // What a task's promise calls back: made the first time a task is asynchronous, not for every
  // queue (a connection that never gets one, an idle one, keeps two closures fewer).
  #taskDone: (() => void) | undefined
  #taskRejected: ((err: unknown) => void) | undefined

  #done (): void {
    this.#inFlight = false
    const then = this.#afterInFlight
    if (then !== null) {
      this.#afterInFlight = null
      then()
    }
    if (this.#watched) this.#runner.afterTask()
    this.#drain()
  }

  #failed (err: unknown): void {
    this.#runner.taskFailed(err)
    this.#done()
  }
}
