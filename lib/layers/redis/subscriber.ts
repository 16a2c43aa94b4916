/**
 * The layer's subscriptions: which pub/sub channels this process wants, whether Redis confirmed
 * each one, and getting them back after a reconnect. Standalone Redis uses SUBSCRIBE on one
 * duplicate connection and resubscribes itself after a reconnect (so it knows when that is done);
 * Redis Cluster uses sharded pub/sub (SSUBSCRIBE) through ioredis' per-shard subscribers.
 */
import { EventEmitter } from 'node:events'
import type { Cluster, Redis } from 'ioredis'
import { isCluster, type Client, type RedisConnections } from './connections.js'

interface Entry {
  confirmed: boolean
  done: Promise<void>
  settle: () => void
}

const noop = (): void => {}

/**
 * When a slot changes master (a failover, a slot moved), the old master drops its sharded
 * subscribers' subscriptions to the slot, and ioredis reads the slot map to subscribe again on the
 * new one. Read before the cluster has settled, the map is the old one: ioredis then stays on a
 * node that no longer sends the slot's messages, and nothing makes it read the map again. So each
 * read of the map that ioredis makes of its own accord is followed by these, each this long after
 * the last, and one is made every SLOTS_READ_MS in any case (a change nothing told of); a read
 * that finds the map changed subscribes again.
 */
const SLOT_REREADS_MS = [1000, 2000, 4000]
const SLOTS_READ_MS = 30_000

function entry (): Entry {
  let settle = noop
  const done = new Promise<void>(resolve => { settle = resolve })
  return { confirmed: false, done, settle }
}

/**
 * Emits 'state' (true once connected with every wanted channel confirmed, false when the
 * connection is lost). Only what `want()` asked for and `drop()` did not take back is subscribed.
 */
export class Subscriber extends EventEmitter {
  readonly #connections: RedisConnections
  readonly #onMessage: (channel: string, payload: Buffer) => void
  readonly #entries = new Map<string, Entry>()
  #conn: Client | undefined
  // Up until a connection that had been ready is lost: connecting for the first time is no outage.
  #up = true
  #closed = false
  // Cluster: the next of the reads that follow a read of the slot map, the periodic one, and
  // whether a read of ours is under way.
  #reread: NodeJS.Timeout | undefined
  #periodicRead: NodeJS.Timeout | undefined
  #readingSlots = false

  constructor (connections: RedisConnections, onMessage: (channel: string, payload: Buffer) => void) {
    super()
    this.#connections = connections
    this.#onMessage = onMessage
  }

  /** False from losing the connection until it is back with every wanted channel subscribed again. */
  get up (): boolean {
    return this.#up
  }

  /** How many channels are wanted: for leak checks. */
  get size (): number {
    return this.#entries.size
  }

  /** Resolves once Redis confirmed the subscription (or the channel was dropped meanwhile). */
  want (channel: string): Promise<void> {
    const existing = this.#entries.get(channel)
    if (existing !== undefined) return existing.done
    const wanted = entry()
    this.#entries.set(channel, wanted)
    const conn = this.#connection()
    if (isCluster(conn)) {
      this.#sharded(conn, channel, wanted)
    } else if (conn.status === 'ready') {
      // Otherwise the 'ready' handler subscribes everything wanted at that moment.
      conn.subscribe(channel).then(() => this.#confirm(channel, wanted), noop)
    }
    return wanted.done
  }

  drop (channel: string): void {
    const wanted = this.#entries.get(channel)
    if (wanted === undefined) return
    this.#entries.delete(channel)
    wanted.settle()
    const conn = this.#conn
    if (conn === undefined) return
    if (isCluster(conn)) conn.sunsubscribe(channel).catch(noop)
    // A connection that is not ready has no subscriptions left on the server to take back.
    else if (conn.status === 'ready') conn.unsubscribe(channel).catch(noop)
  }

  close (): void {
    this.#closed = true
    clearTimeout(this.#reread)
    clearInterval(this.#periodicRead)
    for (const wanted of this.#entries.values()) wanted.settle()
    this.#entries.clear()
    // The connection itself is closed with the others by RedisConnections.close().
  }

  #confirm (channel: string, wanted: Entry): void {
    // A reply for an entry dropped (and maybe wanted again) since must not confirm the new one.
    if (this.#entries.get(channel) !== wanted) return
    wanted.confirmed = true
    wanted.settle()
  }

  #sharded (conn: Cluster, channel: string, wanted: Entry): void {
    conn.ssubscribe(channel).then(() => this.#confirm(channel, wanted), () => {
      // Forget it so that the next want() tries again; the caller's deadline reports the failure.
      if (this.#entries.get(channel) === wanted) this.#entries.delete(channel)
    })
  }

  #connection (): Client {
    if (this.#conn !== undefined) return this.#conn
    const conn = this.#connections.subscriber()
    this.#conn = conn
    if (isCluster(conn)) {
      // ioredis' subscriber group resubscribes by itself after topology changes and reconnects.
      // A sharded channel is a key to Redis, so it comes back with ioredis' keyPrefix on it.
      const prefixed = this.#connections.keyPrefix.length
      conn.on('smessageBuffer', (channel: Buffer, payload: Buffer) => this.#deliver(channel.subarray(prefixed), payload))
      let wasReady = false
      conn.on('ready', () => {
        wasReady = true
        this.#set(true)
      })
      conn.on('close', () => { if (wasReady) this.#set(false) })
      conn.on('refresh', () => { if (!this.#readingSlots) this.#readSlotsAgain(conn, 0) })
      this.#periodicRead = setInterval(() => { this.#readSlots(conn, noop) }, SLOTS_READ_MS).unref()
    } else {
      conn.on('messageBuffer', (channel: Buffer, payload: Buffer) => this.#deliver(channel, payload))
      let wasReady = false
      conn.on('ready', () => {
        wasReady = true
        this.#resubscribe(conn)
      })
      conn.on('close', () => { if (wasReady) this.#lost() })
    }
    conn.connect().catch(noop)
    return conn
  }

  /** The reads of the slot map that follow one ioredis made (SLOT_REREADS_MS), from the `index`th on. */
  #readSlotsAgain (conn: Cluster, index: number): void {
    clearTimeout(this.#reread)
    if (this.#closed || index === SLOT_REREADS_MS.length) return
    this.#reread = setTimeout(() => { this.#readSlots(conn, () => { this.#readSlotsAgain(conn, index + 1) }) }, SLOT_REREADS_MS[index]).unref()
  }

  /** A read of the slot map of ours (which the reads above do not follow); `then` once it is over. */
  #readSlots (conn: Cluster, then: () => void): void {
    this.#readingSlots = true
    conn.refreshSlotsCache(() => {
      this.#readingSlots = false
      then()
    })
  }

  #deliver (channel: Buffer, payload: Buffer): void {
    const name = channel.toString('latin1')
    if (this.#entries.has(name)) this.#onMessage(name, payload)
  }

  #lost (): void {
    for (const [channel, wanted] of this.#entries) {
      if (!wanted.confirmed) continue
      // Waiters of the old entry were answered already; new callers must wait for the resubscription.
      this.#entries.set(channel, entry())
    }
    this.#set(false)
  }

  #resubscribe (conn: Redis): void {
    if (this.#closed) return
    const batch = [...this.#entries]
    if (batch.length === 0) {
      this.#set(true)
      return
    }
    conn.subscribe(...batch.map(([channel]) => channel)).then(() => {
      for (const [channel, wanted] of batch) this.#confirm(channel, wanted)
      this.#set(true)
    }, noop) // the connection failed again; the next 'ready' retries
  }

  #set (up: boolean): void {
    if (up === this.#up) return
    this.#up = up
    this.emit('state', up)
  }
}
