/**
 * Flow control: how much a connection takes in while its consumer is behind. Three sources fill
 * the connection's task queue, and each is held back once HIGH_WATER tasks wait:
 *
 * - client frames: the socket is no longer read, so TCP pushes back on the client. ws still hands
 *   over every frame of what it had read (a read is up to 64 KiB, hundreds of small frames): those
 *   wait here, as if still unread, and go to the queue as it makes room;
 * - a layer that pushes (`listen()`): this is the channel's sink, and it stops accepting. The
 *   layer reads `accepting` before each `push()` and, while it is false, keeps messages in the
 *   channel (its capacity and expiry apply) until `listener.resume()`, called once the queue is
 *   below HIGH_WATER again after it had reached it;
 * - a layer that can only be polled: the `receive()` pump waits.
 *
 * While client frames and layer messages both wait, they take turns at the room the consumer
 * makes, as Channels' consumer takes from its two sources in turn: a burst of frames, each of which
 * sends to a group the consumer is in, cannot fill its own channel past capacity meanwhile. Once the
 * channel has had to keep a message back (`behind()`), and for a second after the last time, its
 * messages go first, and client frames one at a time (one every FRAME_AT_LEAST_EVERY tasks at least).
 *
 * One more hold, on what waits in the channel (a recovering member's catch-up, which the layer
 * hands over past the channel's capacity, and what arrived behind it): it is handed over one
 * message at a time, once the consumer has taken the last, and while the client has not read what
 * it was sent (`congested`) it waits there. A large recovery, and the live messages held behind
 * it, are so written at the pace the client reads; live messages handed over at once to a reader
 * that stops still meet the slow-reader limit (outbound.ts).
 */
import type { ChannelLayer, ChannelListener, ChannelListening, ChannelSink, Delivery, LayerMessage } from '../layers/types.js'
import { canListen } from '../layers/types.js'
import type { TaskQueue } from './task-queue.js'
import { TokenBucket } from './rate-limit.js'

// Enough to keep a consumer busy without buffering a flood outside the layer's own capacity.
export const HIGH_WATER = 16

/** The part of a socket flow control drives: whether it is read. */
export interface Readable {
  pause (): void
  resume (): void
}

export interface FlowOwner {
  /**
   * Undefined while the client has read enough of what it was sent for what waits in the channel
   * to go on; else resolves once it has (outbound.ts).
   */
  whenUncongested (): Promise<void> | undefined
  /** The layer failed under the connection: no message will come any more. */
  layerFailed (err: unknown): void
  /** A client frame came faster than the rate limit allows: it is not queued. */
  overLimit (): void
  /** Client frames are not read (the consumer is behind): at once, and every STILL_HERE_MS while that lasts. */
  stillHere (): void
  /** A layer message came after the connection ended (between stop() and release()): dropped. */
  droppedAfterEnd (): void
}

/** How long after its channel last kept a message back a connection takes that channel's messages before client frames. */
const LAYER_FIRST_MS = 1000
/**
 * Meanwhile, a client frame goes in at least once every this many tasks: a channel that stays
 * full must not keep the client out, and each frame taken may send to every member's channel (a
 * burst of up to this many members at once fills none).
 */
const FRAME_AT_LEAST_EVERY = 32

/** While client frames are not read, the owner is told this often (a client watching for silence must hear something). */
const STILL_HERE_MS = 500

export class FlowControl<Task> implements ChannelSink {
  readonly #queue: TaskQueue<Task | LayerMessage, Delivery>
  readonly #owner: FlowOwner
  #socket: Readable | null = null
  // Stopped reading client frames because the consumer is behind.
  #readsPaused = false
  // Frames ws had read before reads paused, oldest first from #unreadHead; null when none wait.
  #unread: Task[] | null = null
  #unreadHead = 0
  // Whose turn it is first when the queue makes room: unread frames' or the layer's.
  #unreadFirst = false
  // Until when (performance.now()) the channel's messages go before client frames (behind()); 0: turns.
  #layerFirstUntil = 0
  // Tasks completed in that mode since a client frame was last taken.
  #layerTurns = 0
  #stillHere: NodeJS.Timeout | undefined
  // The queue reached HIGH_WATER: the layer may have kept messages back, to resume.
  #saturated = false
  #listener: ChannelListener | null = null
  // From stop() until release(): what drops the messages still sent to the ended connection's channel.
  #dropping: ChannelListener | null = null
  #relisten: ((sink: ChannelSink) => ChannelListener) | null = null
  // The per-connection rate limit on client frames, when there is one.
  #bucket: TokenBucket | null = null
  // When reads were last paused: the rate limit does not charge the client for that time.
  #pausedAt = 0
  /** ChannelSink: the consumer opted in to shared, read-only group messages. */
  sharesMessages = false
  // What waits in the channel waits for the client to read what it was sent: until it has.
  #drained: Promise<void> | null = null
  // ... and for the consumer to have taken what was handed over before it: the queue's `taken`
  // once it has (0: nothing handed over waits in the queue).
  #paced = false
  #handedOver = 0
  // `congested` said the layer may hand over what waited: the next push() is that message.
  #handing = false
  // Only for a layer without listen(): the receive() pump's wake-up and its stop signal.
  #wakePump: (() => void) | null = null
  #stopPump: AbortController | null = null

  constructor (queue: TaskQueue<Task | LayerMessage, Delivery>, owner: FlowOwner) {
    this.#queue = queue
    this.#owner = owner
  }

  /** Whether client frames are held back; a pong cannot be read meanwhile either. */
  get readsPaused (): boolean {
    return this.#readsPaused
  }

  /** Starts taking layer messages from `channel`; client frames come through `fromClient()`. */
  start (socket: Readable, layer: ChannelLayer, channel: string): void {
    this.#socket = socket
    if (canListen(layer)) this.#listen(layer, channel)
    else void this.#pump(layer, channel)
  }

  /** Client frames beyond `messages` per `interval` ms (a token bucket) are refused from now on. */
  limitTo (messages: number, interval: number): void {
    this.#bucket = new TokenBucket(messages, interval)
  }

  /** Whether a client frame is within the rate limit; over it, the owner is told, and false. */
  admit (): boolean {
    if (this.#bucket === null || this.#bucket.take()) return true
    this.#owner.overLimit()
    return false
  }

  /** A client frame within the rate limit (admit()), queued behind what arrived before it. */
  fromClient (task: Task): void {
    if (this.#unread !== null) this.#unread.push(task)
    else if (this.#queue.pending < (this.#layerFirst() ? 1 : HIGH_WATER)) this.#queue.push(task)
    else this.#unread = [task]
    if (this.#unread !== null || this.#queue.pending >= HIGH_WATER) {
      this.#holdBack()
      if (!this.#readsPaused) {
        this.#readsPaused = true
        this.#pausedAt = performance.now()
        this.#socket?.pause()
        const owner = this.#owner
        owner.stillHere()
        this.#stillHere = setInterval(() => { owner.stillHere() }, STILL_HERE_MS).unref()
      }
    }
  }

  /** ChannelSink: a pure reading, taken by the layer before each `push()`. */
  get accepting (): boolean {
    return this.#queue.pending < HIGH_WATER
  }

  /**
   * ChannelSink: replays, and what waited in the channel, wait there while the consumer has not
   * taken what was handed over before them, or the client has not read what it was sent. The layer
   * asks only when it has such a message to hand over; once the consumer has taken it (afterTask),
   * or the socket has drained (or the connection has ended), the layer hands over what waited.
   */
  get congested (): boolean {
    if (this.#drained !== null || this.#paced) return true
    // One message at a time: the client's reading is measured by the bytes its handler sends, so
    // the next waits until the consumer has taken the last (at most one running, one queued). The
    // client's frames queued meanwhile take their turns: the next does not wait for them.
    if (this.#queue.taken < this.#handedOver) {
      this.#paced = true
      this.#queue.watch()
      return true
    }
    const drained = this.#owner.whenUncongested()
    if (drained === undefined) {
      this.#handing = true
      return false
    }
    this.#drained = drained.then(() => {
      this.#drained = null
      this.#listener?.resume()
    })
    return true
  }

  /** ChannelSink: a layer message and how it came, queued behind what arrived before it. */
  push (message: LayerMessage, info: Delivery): void {
    this.#queue.push(message, info)
    if (this.#handing) {
      this.#handing = false
      this.#handedOver = this.#queue.taken + this.#queue.pending
    }
    if (this.#queue.pending >= HIGH_WATER) this.#holdBack()
  }

  /**
   * ChannelSink: the channel kept a message back. For LAYER_FIRST_MS from now, what waits there
   * goes before the client's frames, and those go to the queue one at a time, once nothing else
   * waits (and one every FRAME_AT_LEAST_EVERY tasks at least): each frame may send to a group the consumer
   * is in, and several members bursting at once would otherwise fill each other's channels past
   * capacity, 16 frames each at a time. Client frames wait in TCP meanwhile, where nothing is lost.
   */
  behind (): void {
    this.#layerFirstUntil = performance.now() + LAYER_FIRST_MS
  }

  #layerFirst (): boolean {
    if (this.#layerFirstUntil === 0) return false
    if (performance.now() < this.#layerFirstUntil) return true
    this.#layerFirstUntil = 0
    return false
  }

  /** ChannelSink: the layer closed under the connection. */
  layerClosed (reason: Error): void {
    this.#owner.layerFailed(reason)
  }

  /**
   * The queue has reached HIGH_WATER: a source is (or may be) held back, so the queue reports each
   * completed task (`afterTask()`) until there is room again.
   */
  #holdBack (): void {
    this.#saturated = true
    this.#queue.watch()
  }

  /** After each task while something is held back: below HIGH_WATER, every source flows again. */
  afterTask (): void {
    if (this.#paced && this.#queue.taken >= this.#handedOver) {
      // The consumer has taken what was handed over at its pace: the next may come.
      this.#paced = false
      this.#listener?.resume()
    }
    // Read after the resume: what it handed over may have filled the queue (which then stays watched).
    if (this.#queue.pending >= HIGH_WATER) return
    // First: resuming may fill the queue again at once, and then watch it again.
    if (!this.#paced) this.#queue.unwatch()
    this.#wake()
    if (this.#layerFirst()) {
      // What waits in the channel first; a client frame once nothing else waits, watched for its
      // end while more wait.
      if (this.#saturated) {
        this.#saturated = false
        this.#listener?.resume()
      }
      // One every FRAME_AT_LEAST_EVERY tasks in any case: a channel that stays full (more comes
      // than the consumer handles) must not keep the client's frames out for as long as that lasts.
      if (this.#queue.pending === 0 || ++this.#layerTurns >= FRAME_AT_LEAST_EVERY) {
        this.#layerTurns = 0
        this.#takeUnread(1)
      }
      if (this.#unread !== null) this.#holdBack()
    } else {
      this.#unreadFirst = !this.#unreadFirst
      if (this.#unreadFirst) this.#takeUnread(1)
      if (this.#saturated && this.#queue.pending < HIGH_WATER) {
        this.#saturated = false
        this.#listener?.resume()
      }
      // The rest of the room goes to unread frames, unless the layer has something waiting for it.
      if (!this.#saturated && !this.#paced) this.#takeUnread(HIGH_WATER)
    }
    if (this.#readsPaused && this.#unread === null) {
      this.#readsPaused = false
      clearInterval(this.#stillHere)
      this.#bucket?.resumed(performance.now() - this.#pausedAt)
      this.#socket?.resume()
    }
  }

  /**
   * Up to `count` unread frames go to the queue, while fewer than `room` tasks wait there. Filling
   * it holds the sources back again; once none is left, the socket may be read again.
   */
  #takeUnread (count: number, room = HIGH_WATER): void {
    const unread = this.#unread
    if (unread === null) return
    const queue = this.#queue
    for (let taken = 0; taken < count && queue.pending < room && this.#unreadHead < unread.length; taken++) {
      queue.push(unread[this.#unreadHead])
      unread[this.#unreadHead++] = undefined as Task
    }
    if (this.#unreadHead === unread.length) {
      this.#unread = null
      this.#unreadHead = 0
    }
    if (queue.pending >= HIGH_WATER) this.#holdBack()
  }

  /**
   * No more layer messages: the connection is ending. The frames still unread are queued, ahead
   * of the connection's end, as those read before them are. What the layer still pushes to the
   * channel until it leaves the layer (after `disconnect()`, which may take a while: `release()`)
   * is dropped: in the channel it would fill it, and the group sends after that would count a
   * connection that has ended as a reader too slow to keep up.
   */
  stop (): void {
    this.#takeUnread(Infinity, Infinity)
    clearInterval(this.#stillHere)
    this.#stopPump?.abort()
    if (this.#listener !== null) {
      this.#listener.close()
      this.#listener = null
      try {
        // Where the messages sent to the ended connection go: nowhere, counted.
        const owner = this.#owner
        this.#dropping = this.#relisten?.({ accepting: true, push () { owner.droppedAfterEnd() }, layerClosed () {} }) ?? null
      } catch {
        // The layer closed meanwhile: nothing more comes.
      }
    }
    this.#wake()
  }

  /** The channel has left the layer: nothing more is sent to it. */
  release (): void {
    this.#dropping?.close()
    this.#dropping = null
  }

  #listen (layer: ChannelLayer & ChannelListening, channel: string): void {
    try {
      this.#listener = layer.listen(channel, this)
      this.#relisten = sink => layer.listen(channel, sink)
    } catch (err) {
      this.#owner.layerFailed(err)
    }
  }

  /** One `receive()` at a time, waiting while HIGH_WATER tasks are queued. */
  async #pump (layer: ChannelLayer, channel: string): Promise<void> {
    this.#stopPump = new AbortController()
    const signal = this.#stopPump.signal
    while (!signal.aborted) {
      let message: LayerMessage
      try {
        message = await layer.receive(channel, { signal })
      } catch (err) {
        if (!signal.aborted) this.#owner.layerFailed(err)
        return
      }
      this.#queue.push(message)
      if (this.#queue.pending >= HIGH_WATER) {
        this.#queue.watch()
        await new Promise<void>(resolve => { this.#wakePump = resolve })
      }
    }
  }

  #wake (): void {
    const wake = this.#wakePump
    this.#wakePump = null
    wake?.()
  }
}
