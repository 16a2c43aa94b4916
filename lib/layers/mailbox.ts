import type { Delivery, LayerMessage, Received } from './types.js'

/**
 * One `receive()` call waiting for a message. It is its own abort listener (`handleEvent`) and its
 * own list node, so waiting allocates nothing beyond the promise.
 */
export class Waiter {
  prev: Waiter | null = null
  next: Waiter | null = null

  constructor (
    readonly mailbox: Mailbox,
    readonly resolve: (received: Received) => void,
    readonly reject: (reason: unknown) => void,
    readonly signal: AbortSignal | undefined
  ) {}

  /** Abort: leave the queue without consuming anything; the caller sees the signal's reason. */
  handleEvent (): void {
    this.mailbox.removeWaiter(this)
    this.mailbox.releaseIfIdle()
    this.reject(this.signal?.reason)
  }

  /** Detaches from the signal: a long-lived signal must not collect one listener per message. */
  settle (): void {
    this.signal?.removeEventListener('abort', this)
  }
}

/**
 * Which expired messages leave a marker in their place, and which marker (local-channels.ts): a
 * consumer can read them back, and learns of them from it.
 */
export interface ExpiryMarks {
  readonly marker: LayerMessage
  leavesMarker (message: LayerMessage, info: Delivery): boolean
  /** Whether the markers of `earlier` and `later`, next to each other, are one: `later`'s. */
  sameRun (earlier: Delivery, later: Delivery): boolean
}

/**
 * A channel's process-local queue and waiting receivers. Messages go straight to a waiter when one
 * exists, so a mailbox never holds messages and waiters at the same time.
 */
export class Mailbox {
  // Parallel arrays with a moving head: no wrapper object per message and no O(n) shift().
  private messages: Array<LayerMessage | undefined> = []
  private infos: Array<Delivery | undefined> = []
  private expiresAt: number[] = []
  private head = 0
  // Replayed messages (a recovering member's catch-up) do not count against the channel's
  // capacity, neither when they are queued nor while they wait: live messages after them must
  // still find room. A flag per queued message, along the arrays above (one object, such as the
  // skip marker, may be queued more than once): made on the first replay, dropped once none waits.
  private replays: boolean[] | null = null
  private replaysQueued = 0
  private firstWaiter: Waiter | null = null
  private lastWaiter: Waiter | null = null

  constructor (readonly channel: string, private readonly registry: Map<string, Mailbox>) {}

  get size (): number {
    return this.messages.length - this.head
  }

  /** What counts against the channel's capacity: the queued messages that are not replays. */
  get backlog (): number {
    return this.messages.length - this.head - this.replaysQueued
  }

  get hasWaiters (): boolean {
    return this.firstWaiter !== null
  }

  push (message: LayerMessage, info: Delivery, expiresAt: number, replay = false): void {
    if (replay) {
      this.replays ??= new Array<boolean>(this.messages.length).fill(false)
      this.replaysQueued++
    }
    this.replays?.push(replay)
    this.messages.push(message)
    this.infos.push(info)
    this.expiresAt.push(expiresAt)
  }

  /** Whether the newest queued message is `message` itself. */
  endsWith (message: LayerMessage): boolean {
    return this.messages.length > this.head && this.messages[this.messages.length - 1] === message
  }

  /** The `Delivery` of the newest queued message. */
  get lastInfo (): Delivery | undefined {
    return this.messages.length > this.head ? this.infos[this.infos.length - 1] : undefined
  }

  /** Replaces how the newest queued message came. */
  setLastInfo (info: Delivery): void {
    this.infos[this.infos.length - 1] = info
  }

  /** The oldest message with how it came, or undefined. */
  shift (): Received | undefined {
    if (this.head === this.messages.length) return undefined
    const received = { message: this.messages[this.head] as LayerMessage, info: this.infos[this.head] as Delivery }
    this.#forget(this.head)
    this.messages[this.head] = undefined
    this.infos[this.head++] = undefined
    this.compact()
    return received
  }

  /**
   * Expiry times only grow along the queue (a replay, which never expires, holds back those behind
   * it until it has gone), so expired messages are always at the head. Returns how many. With
   * `marks`, the expired messages it picks leave its marker in their place, one per run (see
   * ExpiryMarks), so that the channel's reader learns, in order, what it did not get.
   */
  dropExpired (now: number, marks?: ExpiryMarks): number {
    const end = this.messages.length
    let head = this.head
    let runs: Delivery[] | null = null
    while (head < end && this.expiresAt[head] <= now) {
      const info = this.infos[head] as Delivery
      if (marks?.leavesMarker(this.messages[head] as LayerMessage, info) === true) {
        if (runs === null) runs = [info]
        else if (marks.sameRun(runs[runs.length - 1], info)) runs[runs.length - 1] = info
        else runs.push(info)
      }
      this.#forget(head)
      this.messages[head] = undefined
      this.infos[head++] = undefined
    }
    const dropped = head - this.head
    if (runs !== null && marks !== undefined) {
      // The markers take the last slots of what expired, in its order: nothing moves.
      head -= runs.length
      for (let i = 0; i < runs.length; i++) this.#putMarker(head + i, marks.marker, runs[i])
    }
    if (dropped !== 0) {
      this.head = head
      this.compact()
    }
    return dropped
  }

  /** A marker at `index`, a freed slot: it never expires, nor counts against the capacity. */
  #putMarker (index: number, marker: LayerMessage, info: Delivery): void {
    this.messages[index] = marker
    this.infos[index] = info
    this.expiresAt[index] = Infinity
    this.replays ??= new Array<boolean>(this.messages.length).fill(false)
    this.replays[index] = true
    this.replaysQueued++
  }

  clearMessages (): void {
    this.replays = null
    this.replaysQueued = 0
    this.messages = []
    this.infos = []
    this.expiresAt = []
    this.head = 0
  }

  addWaiter (waiter: Waiter): void {
    waiter.prev = this.lastWaiter
    if (this.lastWaiter === null) this.firstWaiter = waiter
    else this.lastWaiter.next = waiter
    this.lastWaiter = waiter
  }

  removeWaiter (waiter: Waiter): void {
    if (waiter.prev === null) {
      // Already taken or removed: a late abort must not unlink someone else.
      if (this.firstWaiter !== waiter) return
      this.firstWaiter = waiter.next
    } else {
      waiter.prev.next = waiter.next
    }
    if (waiter.next === null) this.lastWaiter = waiter.prev
    else waiter.next.prev = waiter.prev
    waiter.prev = waiter.next = null
  }

  /** The longest-waiting receiver, removed from the queue and detached from its signal. */
  takeWaiter (): Waiter | null {
    const waiter = this.firstWaiter
    if (waiter !== null) {
      this.removeWaiter(waiter)
      waiter.settle()
    }
    return waiter
  }

  /** Removes this mailbox from its layer once it holds nothing, so idle channels cost no memory. */
  releaseIfIdle (): void {
    if (this.head === this.messages.length && this.firstWaiter === null &&
      this.registry.get(this.channel) === this) {
      this.registry.delete(this.channel)
    }
  }

  /** The message at `index` leaves the queue. */
  #forget (index: number): void {
    if (this.replays?.[index] === true && --this.replaysQueued === 0) this.replays = null
  }

  private compact (): void {
    if (this.head === this.messages.length) {
      this.messages.length = 0
      this.infos.length = 0
      this.expiresAt.length = 0
      this.head = 0
    } else if (this.head >= 1024 && this.head * 2 >= this.messages.length) {
      this.messages.splice(0, this.head)
      this.replays?.splice(0, this.head)
      this.infos.splice(0, this.head)
      this.expiresAt.splice(0, this.head)
      this.head = 0
    }
  }
}
