/**
 * The readers of named channels (named-channels.ts). A process that has waiting `receive()` calls
 * on a channel runs one reader for it: a loop of blocking pops on a connection of its own (a
 * blocking pop holds its connection), handing each message to the longest-waiting local receiver.
 * Redis hands each element to one pop only, so each message reaches one receiver in all processes.
 * A pop moves the message into the reader's claim (claims.ts) rather than out of Redis, so a
 * message whose answer is lost on the way goes back to the queue. A pop whose receivers all gave
 * up is ended (standalone Redis), and a message popped after its receivers left goes back to the
 * head of the list.
 */
import { LayerTimeoutError } from '../../errors.js'
import type { Received } from '../types.js'
import { withDeadline, withTimeout } from '../deadline.js'
import type { ClusterContext } from '../cluster/transport.js'
import { DEADLINE_WIDTH, type ServerClock } from './scripts.js'
import { isReplyError, type Client, type RedisConnections } from './connections.js'
import type { Claims, Claim } from './claims.js'
import { unopenedHere } from '../codec.js'
import { ThrottledWarning } from '../throttled-warning.js'

/** Seconds one pop waits on the server before the reader looks around (receivers gone? closing?). */
export const POP_SECONDS = 1
/** Idle blocking connections kept for the next reader. */
const IDLE_CONNECTIONS = 2
/** A reader that gave a message back for another process waits this long before its next pop. */
const LEAVE_FOR_OTHERS_MS = 1000
/** A message that stays at the head of its queue, unopened here, is said again this often. */
const STILL_UNOPENED_EVERY_MS = 60_000

/** The expiry deadline of a queue element (server ms), or NaN for a malformed one. */
function queueDeadline (element: Buffer): number {
  return Number(element.toString('latin1', 0, DEADLINE_WIDTH))
}

class Reader {
  running = false
  /** A pop under way and the handing over of what it took: close() waits for it. */
  taking: Promise<void> | undefined
  /** The connection of the pop waiting in Redis now, if one is. */
  popping: Client | undefined
  /** Where this reader's pops put what they take. */
  claim: Claim | undefined
  /** The message at the head of the queue that this process cannot open, last it took it. */
  unopened: Buffer | undefined
  /** When it first took it, and when it last said so (performance.now()). */
  unopenedSince = 0
  unopenedToldAt = 0
  /** One controller per waiting receive(): lets an outage reject them with LayerTimeoutError. */
  readonly receivers = new Set<AbortController>()
  constructor (readonly channel: string, readonly key: string) {}
}

export class QueueReaders {
  readonly #connections: RedisConnections
  readonly #layer: ClusterContext
  readonly #clock: ServerClock
  readonly #readers = new Map<string, Reader>()
  readonly #idle: Client[] = []
  readonly #busy = new Set<Client>()
  readonly #claims: Claims
  /** Ends the readers' waits between attempts, for close(). */
  readonly #wakes = new Set<() => void>()
  readonly #leftForOthers: ThrottledWarning
  #closed = false

  constructor (connections: RedisConnections, layer: ClusterContext, clock: ServerClock, claims: Claims) {
    this.#claims = claims
    this.#connections = connections
    this.#layer = layer
    this.#clock = clock
    this.#leftForOthers = new ThrottledWarning(() => layer.log(),
      'a message of a named channel that this process cannot open went back to its queue, for a process that can (see encryptionKeys)',
      count => `${count} more messages of named channels that this process cannot open went back to their queues within a second`, 'givenBack')
  }

  /** Readers running now: for leak checks. */
  get size (): number {
    return this.#readers.size
  }

  receive (channel: string, key: string, signal: AbortSignal | undefined): Promise<Received> {
    let reader = this.#readers.get(channel)
    if (reader === undefined) {
      reader = new Reader(channel, key)
      this.#readers.set(channel, reader)
    }
    const own = new AbortController()
    const forward = (): void => own.abort(signal?.reason)
    signal?.addEventListener('abort', forward, { once: true })
    reader.receivers.add(own)
    const pending = this.#layer.store.receive(channel, own.signal)
    const settled = (): void => {
      signal?.removeEventListener('abort', forward)
      reader.receivers.delete(own)
      if (own.signal.aborted && !this.#layer.store.hasReceivers(channel)) this.#unblock(reader)
    }
    pending.then(settled, settled)
    if (!reader.running) void this.#run(reader)
    return pending
  }

  /**
   * Stops reading. A pop under way may already have taken a message (its receivers gone with the
   * closing layer): it is awaited, for at most the pop's own wait and `timeout`, and what it took
   * goes back to the queue before the connections close, and the claims leave Redis. Past that,
   * the connections close anyway: a claim left holds its message until its lease runs out, and
   * another process gives it back. A reader that is connecting or waiting to try again is not
   * waited for: what its last claim holds is given back with the others.
   */
  async close (): Promise<void> {
    this.#closed = true
    this.#leftForOthers.close()
    for (const wake of this.#wakes) wake()
    for (const conn of this.#idle.splice(0)) this.#connections.release(conn)
    const taking = [...this.#readers.values()].flatMap(reader => reader.taking ?? [])
    if (taking.length > 0) {
      await withTimeout(Promise.allSettled(taking), POP_SECONDS * 1000 + this.#connections.timeout, 'close').catch(() => {})
      await new Promise(resolve => setImmediate(resolve)) // the readers that were taking end their runs, and their claims
    }
    await withTimeout(this.#claims.close(), this.#connections.timeout, 'close').catch(() => {})
    for (const conn of this.#busy) this.#connections.release(conn)
    this.#busy.clear()
  }

  async #run (reader: Reader): Promise<void> {
    reader.running = true
    const { channel } = reader
    let failingSince: number | undefined
    let backoff = 50
    let conn: Client | undefined
    try {
      while (!this.#closed && this.#layer.store.hasReceivers(channel)) {
        try {
          conn ??= await this.#acquire()
          await this.#connect(conn)
          await this.#claims.settled(channel) // what an earlier pop took and never handed over comes first
          reader.claim ??= this.#claims.take(channel)
          reader.taking = this.#take(conn, reader, reader.claim)
          try {
            await reader.taking
          } finally {
            reader.taking = undefined
          }
          failingSince = undefined
          backoff = 50
        } catch (err) {
          if (isReplyError(err) && !isFailoverReply(err)) {
            // Redis answered (WRONGTYPE: the key holds something else; NOPERM…): no outage, the
            // connection is fine. The waiting receivers get the answer as it is, and the loop ends.
            this.#layer.log().warn({ err, channel }, 'Redis refused to pop a named channel')
            for (const receiver of [...reader.receivers]) receiver.abort(err)
            continue
          }
          // A pop may still be queued on the connection: its claim is given back once that is ruled out.
          if (reader.claim !== undefined) this.#claims.giveUp(reader.claim, conn)
          reader.claim = undefined
          if (conn !== undefined) this.#discard(conn)
          conn = undefined
          if (this.#closed) break
          const now = performance.now()
          failingSince ??= now
          this.#layer.log().debug({ err, channel }, 'named channel reader could not reach Redis; retrying')
          if (now - failingSince >= this.#connections.timeout) {
            // Waiting receivers are told Redis is unreachable instead of waiting in the dark.
            const reason = new LayerTimeoutError(`receive ${channel}`, this.#connections.timeout)
            for (const receiver of [...reader.receivers]) receiver.abort(reason)
            failingSince = undefined
          }
          // Wake no later than the moment the waiting receivers are due their LayerTimeoutError.
          const due = (failingSince ?? now) + this.#connections.timeout - performance.now()
          await this.#pause(Math.max(0, Math.min(backoff, due)))
          backoff = Math.min(backoff * 2, 1000)
        }
      }
    } finally {
      reader.running = false
      if (reader.claim !== undefined) this.#claims.park(reader.claim)
      reader.claim = undefined
      if (conn !== undefined) this.#recycle(conn)
      if (this.#readers.get(channel) === reader) {
        // A receive() may have arrived while the last pop was finishing.
        if (!this.#closed && this.#layer.store.hasReceivers(channel)) void this.#run(reader)
        else this.#readers.delete(channel)
      }
    }
  }

  /** Waits `ms` between attempts, or until close(). */
  #pause (ms: number): Promise<void> {
    if (this.#closed) return Promise.resolve()
    return new Promise(resolve => {
      const wake = (): void => {
        clearTimeout(timer)
        this.#wakes.delete(wake)
        resolve()
      }
      const timer = setTimeout(wake, ms)
      this.#wakes.add(wake)
    })
  }

  /**
   * The last receiver here gave up (aborted, timed out) while the reader's pop waits in Redis: the
   * pop is ended (CLIENT UNBLOCK, standalone Redis), so that it takes no message nobody here
   * wants. Taken, such a message would go back to the head of the list, after a later one had
   * gone to another process' receiver. One the pop took already is given back as before.
   */
  #unblock (reader: Reader): void {
    const conn = reader.popping
    const id = conn === undefined ? undefined : this.#claims.idOf(conn)
    if (id === undefined) return
    this.#connections.run('receive', client => client.client('UNBLOCK', id)).catch(() => {}) // the pop ends within its second anyway
  }

  /** Connects a connection not ready yet (a new one, or one that dropped). */
  async #connect (conn: Client): Promise<void> {
    const timeout = this.#connections.timeout
    if (conn.status !== 'ready') {
      const connected = performance.now() + timeout
      const connecting = conn.status === 'wait' ? conn.connect() : Promise.reject(new Error(`connection ${conn.status}`))
      await withDeadline(connecting, connected, 'connect', timeout)
      // Elements carry deadlines in server time; a worker-only process learns it here. On
      // Cluster, a pop's node is ioredis' choice: its pops are not ended early. The command
      // connection too: what a pop hands over is removed through it before the handler runs, and
      // a worker-only process would otherwise open it only then, after a handler that holds the
      // event loop.
      const [time] = await withDeadline(Promise.all([conn.time(), this.#claims.identify(conn), this.#connections.ready('connect')]), connected, 'connect', timeout)
      this.#clock.observeTime(time)
    }
  }

  /** One pop, and what it took handed to a receiver here (or given back). */
  async #take (conn: Client, reader: Reader, claim: Claim): Promise<void> {
    const timeout = this.#connections.timeout
    // The server answers within POP_SECONDS; past that plus `timeout`, the connection is dead.
    const deadline = performance.now() + POP_SECONDS * 1000 + timeout
    let taken: Buffer | null
    reader.popping = conn
    try {
      taken = await this.#claims.pop(conn, claim, reader.key, POP_SECONDS, deadline, timeout)
    } finally {
      reader.popping = undefined
    }
    if (taken !== null) await this.#hand(reader, claim, taken)
  }

  async #hand (reader: Reader, claim: Claim, element: Buffer): Promise<void> {
    const { channel } = reader
    const deadline = queueDeadline(element)
    if (!(deadline > this.#clock.now())) { // expired in the list or on the way, or not ours (NaN)
      if (!Number.isNaN(deadline)) this.#layer.expired(1)
      claim.hand(element)
      return
    }
    if (this.#layer.store.hasReceivers(channel)) {
      // Taken again: not tried again, nor reported again.
      if (reader.unopened?.equals(element) === true) {
        this.#stillUnopened(reader)
        return await this.#leaveForOthers(reader, claim)
      }
      let received: Received
      try {
        received = this.#layer.codec.decodeDelivery(element.subarray(DEADLINE_WIDTH), true)
      } catch (err) {
        const unopened = unopenedHere(err)
        if (unopened?.elsewhere === true) {
          reader.unopened = element
          reader.unopenedSince = reader.unopenedToldAt = performance.now()
          this.#leftForOthers.warn({ channel })
          return await this.#leaveForOthers(reader, claim)
        }
        claim.hand(element)
        // One that names a key of this process and fails it was reported as undecryptable already.
        if (unopened === undefined) this.#layer.log().warn({ err, channel }, 'dropped an undecodable message from a named channel')
        return
      }
      reader.unopened = undefined
      claim.hand(element)
      // Out of the claim before the handler has it (a worker's may run inside deliver()).
      this.#claims.removeHanded(claim)
      this.#layer.store.deliver(channel, received.message, received.info)
      return
    }
    // Everyone who waited here left while the pop was in flight: give it back to the others.
    await this.#giveBack(reader, claim)
  }

  /** What the reader's pop took goes back to the head of its queue; until Redis answers, the claim keeps it. */
  async #giveBack (reader: Reader, claim: Claim): Promise<void> {
    try {
      await this.#claims.giveBackTaken(claim)
    } catch (err) {
      this.#layer.log().debug({ err, channel: reader.channel }, 'could not give a message back to its named channel yet')
      this.#claims.giveUp(claim, undefined) // the claim keeps it until Redis answers again
      reader.claim = undefined
    }
  }

  /**
   * A message this process cannot open and another may (sealed with a key it lacks, in a rotation
   * made in the wrong order): it goes back to the head of its queue, where a process that can open
   * it takes it next (a message behind it may go first, taken while it was out of the queue for a
   * round trip), and this reader waits a second before its next pop, so that it does not take the
   * message straight back. Meanwhile this process takes nothing from the queue; a message no
   * process opens stays at its head until it expires.
   */
  async #leaveForOthers (reader: Reader, claim: Claim): Promise<void> {
    await this.#giveBack(reader, claim)
    await this.#pause(LEAVE_FOR_OTHERS_MS)
  }

  /** The same message is still at the head: said again once a minute while it stays there. */
  #stillUnopened (reader: Reader): void {
    const now = performance.now()
    if (now - reader.unopenedToldAt < STILL_UNOPENED_EVERY_MS) return
    reader.unopenedToldAt = now
    this.#layer.log().warn({ channel: reader.channel, seconds: Math.round((now - reader.unopenedSince) / 1000) },
      'a message of a named channel that this process cannot open is still at the head of its queue: this process takes nothing from the queue until a process with the key does, or it expires')
  }

  async #acquire (): Promise<Client> {
    const conn = this.#idle.pop() ?? this.#connections.blocking()
    this.#busy.add(conn)
    return conn
  }

  #recycle (conn: Client): void {
    this.#busy.delete(conn)
    if (this.#closed || this.#idle.length >= IDLE_CONNECTIONS || conn.status !== 'ready') this.#connections.release(conn)
    else this.#idle.push(conn)
  }

  #discard (conn: Client): void {
    this.#busy.delete(conn)
    this.#connections.release(conn)
  }
}

/**
 * A reply a failover gives (a pop ended by a master that became a replica, a node loading or
 * without its master, a Cluster without a slot's master): nothing was taken, and the pop is tried
 * again as after a lost connection, the receivers still waiting.
 */
function isFailoverReply (err: unknown): boolean {
  return /^(UNBLOCKED|READONLY|LOADING|MASTERDOWN|CLUSTERDOWN|TRYAGAIN)\b/.test((err as Error).message)
}
