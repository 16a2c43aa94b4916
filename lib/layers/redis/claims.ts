/**
 * What a named channel's pop took and has not handed over yet stays in Redis until it has been.
 *
 * A pop does not take the head of the queue out of Redis (BLPOP): it moves it into a list of the
 * reader's own, a **claim** (BLMOVE), which lasts as long as that reader's run (and a second
 * after, for the channel's next run). Once this process has handed the message to a receiver, it
 * is removed from the claim, in the round trip of the reader's next pop, or at once when the run
 * ends. So a message whose answer never reaches
 * the process (the connection dropped with it on the way, or Redis answered past the pop's
 * deadline) is still in Redis, and goes back to the head of its queue:
 * - by this process, as soon as Redis answers again. On standalone Redis the old connection is
 *   ended there first (`CLIENT KILL`), so that no pop still queued on it can fill the claim after;
 * - on Redis Cluster (a pop's node is ioredis' choice, so its connection cannot be ended), and when
 *   the process died, once the claim's lease ran out: by this process, or by whichever process
 *   reads that channel next.
 * A message handed over stays in the claim for that round trip: a process that dies (or loses
 * Redis for longer than the lease) within it has that message given back and delivered again.
 *
 * A claim's key starts with a marker, an element shorter than a message (which keeps the key and
 * its expiry while the claim holds nothing), then holds what was handed over and not removed yet
 * (one message, unless a removal failed) and the one taken since. Each message handed over gets a
 * removal number, and the marker holds the last one run: two messages can be the same bytes (the
 * same message sent in the same millisecond), so a removal sent again after a failed round trip
 * removes only what the marker says was not removed yet, never an identical message taken since.
 */
import type { ChainableCommander } from 'ioredis'
import { LayerTimeoutError } from '../../errors.js'
import { ttl, withDeadline } from '../deadline.js'
import type { ClusterContext } from '../cluster/transport.js'
import { isCluster, isReplyError, type Client, type RedisConnections } from './connections.js'
import type { RedisKeys } from './keys.js'
import { lostScript, runScript, runScriptBy, type Script } from './scripts.js'
import { giveBack, removal, renewal } from './claim-scripts.js'

/**
 * How long a claim outlives its last renewal before any process may give back what it holds: at
 * least this, and three times a pop's deadline (its wait in Redis plus the layer's `timeout`), past
 * which its process gives the pop up.
 */
const MIN_LEASE_MS = 20_000
/** A claim outlives its reader's run this long, for the channel's next run. */
const PARK_MS = 1000
/** Claims that could not be given back yet are tried again this often. */
const RETRY_MS = 1000

/** A blocking connection as Redis knows it (standalone only): its id, and the unique name that proves it is still ours. */
interface Blocked {
  readonly id: number
  readonly name: string
}

export class Claim {
  /**
   * What pops took and this process handed over, each with the number of its removal (the marker
   * holds the last one run), oldest first, until removed from the claim in Redis. One, unless a
   * removal failed while its pop took the next message.
   */
  readonly #handed: Array<[Buffer, number]> = []
  #removals = 0
  /** When the lease was last renewed (performance.now()); -Infinity before the first pop. */
  renewedAt = -Infinity
  /** A pop was sent and its answer has not come: it may still run in Redis. */
  unanswered = false
  /** Once given up: given back at once (`own`, after ending `blocked` in Redis), or once its lease ran out. */
  mode: 'own' | 'lease' = 'own'
  /** Given up holding a message nobody received (or maybe: a pop whose answer never came). */
  holds = false
  blocked: Blocked | undefined
  constructor (readonly channel: string, readonly id: string, readonly key: string, readonly claims: string,
    /** Another process' claim whose lease ran out. */
    readonly swept = false) {}

  /** The arguments that remove what was handed over: pairs of (message, removal number), oldest first. */
  removing (): Array<Buffer | number> {
    return this.#handed.flat()
  }

  /** The removals of `removing` (as removing() gave them) ran. */
  removed (removing: ReadonlyArray<Buffer | number>): void {
    const last = removing.at(-1)
    while (this.#handed.length > 0 && this.#handed[0][1] <= (last as number)) this.#handed.shift()
  }

  /** The pop took `element`, and it is handed over (or dropped: expired, undecodable). */
  hand (element: Buffer): void {
    this.#handed.push([element, ++this.#removals])
  }
}

export class Claims {
  readonly #connections: RedisConnections
  readonly #keys: RedisKeys
  readonly #layer: ClusterContext
  readonly #blocked = new WeakMap<Client, Blocked>()
  /** Claims kept after their reader's run, for the channel's next run (see park()). */
  readonly #parked = new Map<string, { claim: Claim, timer: ReturnType<typeof setTimeout> }>()
  /** Removals of what parking claims handed over, under way: close() waits for them. */
  readonly #parking = new Set<Promise<void>>()
  /** Claims ended or given up, until removed from Redis (and what they hold given back). */
  readonly #ending = new Map<string, Claim>()
  /** See MIN_LEASE_MS. */
  readonly #lease: number
  /** A reader renews its claim's lease, and looks for claims of the channel whose lease ran out, this often. */
  readonly #renewal: number
  #count = 0
  /** The scripts Redis has (see #queueScript()). */
  readonly #loaded = new Set<Script>()
  #settling: Promise<void> | undefined
  /** A claim was given up while a settling was finishing: settle again at once. */
  #again = false
  #retry: ReturnType<typeof setTimeout> | undefined
  #closed = false

  constructor (connections: RedisConnections, keys: RedisKeys, layer: ClusterContext, popDeadlineMs: number) {
    this.#connections = connections
    this.#keys = keys
    this.#layer = layer
    this.#lease = Math.max(MIN_LEASE_MS, 3 * popDeadlineMs)
    this.#renewal = this.#lease / 4
  }

  /**
   * Names a new blocking connection uniquely in Redis and learns its id, so that it can be ended
   * there later (standalone Redis). Not on Cluster, nor for a user not allowed to: its claims then
   * wait for their lease. Loads the removal script too: the removal removeHanded() writes must be
   * carried out as written, not answered NOSCRIPT and sent again after a handler that holds the
   * event loop.
   */
  async identify (conn: Client): Promise<void> {
    if (isCluster(conn)) return
    // Apart: a user not allowed SCRIPT LOAD still names its connection (the removal then runs as
    // EVAL after a NOSCRIPT, as every script does).
    const loaded = conn.script('LOAD', removal.lua).catch((err: unknown) => { if (!isReplyError(err)) throw err })
    const name = `${conn.options.connectionName ?? this.#layer.processToken}:${++this.#count}`
    try {
      const [, id] = await Promise.all([conn.client('SETNAME', name), conn.client('ID'), loaded])
      this.#blocked.set(conn, { id: Number(id), name })
    } catch (err) {
      if (!isReplyError(err)) throw err
    }
  }

  /** A blocking connection's id in Redis, once identify() learned it (for CLIENT UNBLOCK too). */
  idOf (conn: Client): number | undefined {
    return this.#blocked.get(conn)?.id
  }

  /** A claim for a reader's run on `channel`: the one its last run parked, or a new one. */
  take (channel: string): Claim {
    const parked = this.#parked.get(channel)
    if (parked !== undefined) {
      clearTimeout(parked.timer)
      this.#parked.delete(channel)
      return parked.claim
    }
    const id = `${this.#layer.processToken}.${++this.#count}`
    return new Claim(channel, id, this.#keys.claim(channel, id), this.#keys.claims(channel))
  }

  /**
   * Its reader's run ended after an answered pop: the claim is kept for PARK_MS, for the channel's
   * next run, so that a worker that receives one message at a time does not open a claim per
   * message. What it handed over is removed with the next run's first pop if that comes within
   * the turn (a worker that receives again at once), else on its own (a worker may handle the
   * message for long before it receives again).
   */
  park (claim: Claim): void {
    this.#keep(claim)
    if (claim.removing().length === 0) return
    setImmediate(() => {
      if (this.#parked.get(claim.channel)?.claim !== claim) return // taken, or ended: removed that way
      this.removeHanded(claim)
    })
  }

  /**
   * Removes from the claim what it handed over, now: a message handed to a receiver whose handler
   * then holds the event loop (a synchronous stretch) would otherwise stay in the claim, its lease
   * unrenewed, until another process gives it back to the queue as taken by a process that died:
   * a second worker would handle it while the first still does. Written before the handler runs,
   * not awaited.
   */
  removeHanded (claim: Claim): void {
    const removing = claim.removing()
    if (removing.length === 0) return
    // Written at once (not through run(), which waits a turn, nor autopipelining, which holds the
    // command to the end of the turn): the handler runs in the next microtask.
    const connections = this.#connections
    const sent = runScriptBy(connections.scriptSender(connections.cmd), removal, [claim.key], removing)
    const parking = withDeadline(sent, performance.now() + connections.timeout, `receive ${claim.channel}`, connections.timeout)
      .then(() => { claim.removed(removing) }, () => {}) // still recorded: removed by the next pop, or with the claim
      .finally(() => this.#parking.delete(parking))
    this.#parking.add(parking)
  }

  #keep (claim: Claim): void {
    if (this.#closed || this.#parked.has(claim.channel)) {
      this.end(claim)
      return
    }
    const timer = setTimeout(() => {
      this.#parked.delete(claim.channel)
      this.end(claim)
    }, PARK_MS).unref()
    this.#parked.set(claim.channel, { claim, timer })
  }

  /**
   * One pop into `claim` on `conn`, waiting up to `seconds` in Redis, in one round trip with the
   * removal of what the last pop handed over and, when due, the lease's renewal. The message
   * taken, or null.
   */
  async pop (conn: Client, claim: Claim, queue: string, seconds: number, deadline: number, timeout: number): Promise<Buffer | null> {
    const pipeline: ChainableCommander = conn.pipeline()
    const removing = claim.removing()
    const removes = removing.length > 0
    if (removes) this.#queueScript(pipeline, removal, [claim.key], removing)
    const renew = performance.now() - claim.renewedAt >= this.#renewal
    if (renew) this.#queueScript(pipeline, renewal, [claim.key, claim.claims], [claim.id, this.#lease, ttl(this.#lease + this.#layer.expiryMs)])
    pipeline.blmoveBuffer(queue, claim.key, 'LEFT', 'RIGHT', seconds)
    claim.unanswered = true
    const replies = await withDeadline(this.#connections.inOneWrite(conn, () => pipeline.exec()), deadline, 'receive', timeout)
    if (replies === null) throw new Error('Connection is closed')
    const [popError, taken] = replies[replies.length - 1]
    // An error of the connection is no answer: the pop may still run in Redis.
    claim.unanswered = popError !== null && !isReplyError(popError)
    if (popError !== null) throw popError
    let at = 0
    if (removes && this.#scriptRan(removal, replies[at++][0])) claim.removed(removing)
    if (renew) {
      const [err, expired] = replies[at]
      if (this.#scriptRan(renewal, err)) {
        claim.renewedAt = performance.now()
        for (const id of expired as string[]) this.#leaseRanOut(claim.channel, id)
      } else if (!lostScript([err, undefined])) {
        this.#layer.log().warn({ err, channel: claim.channel }, 'could not renew the lease of a named channel\'s claim; trying again with the next pop')
      }
    }
    return taken as Buffer | null
  }

  /** What the claim took goes back to the head of its queue (its receivers left); the claim stays. */
  async giveBackTaken (claim: Claim): Promise<void> {
    await this.#giveBack(claim, 'return')
  }

  /** The claim is done with: removed from Redis, after what it holds is given back (see giveUp). */
  end (claim: Claim): void {
    this.#ending.set(claim.id, claim)
    if (this.#settling !== undefined) this.#again = true
    void this.settle()
  }

  /**
   * The claim may hold a message nobody received: its receivers left and it could not be given back
   * then, or its connection failed (`conn`), maybe with a pop still queued on it in Redis. What it
   * holds goes back as soon as that is ruled out.
   */
  giveUp (claim: Claim, conn: Client | undefined): void {
    claim.holds = true
    if (conn !== undefined && claim.unanswered) {
      claim.blocked = this.#blocked.get(conn)
      if (claim.blocked === undefined) claim.mode = 'lease'
    }
    this.end(claim)
  }

  /**
   * Waits for what this process' claims of `channel` hold (those it can give back now) to be given
   * back, so that it comes before what the channel's next pop takes.
   */
  async settled (channel: string): Promise<void> {
    for (const claim of this.#ending.values()) {
      if (claim.channel === channel && claim.holds && claim.mode === 'own' && !claim.swept) return await this.settle()
    }
  }

  /** Gives back the claims given up; those that cannot be yet are tried again in a second. */
  settle (): Promise<void> {
    this.#settling ??= this.#settle().finally(() => {
      this.#settling = undefined
      if (this.#again) {
        this.#again = false
        void this.settle()
      } else if (this.#ending.size > 0 && !this.#closed && this.#retry === undefined) {
        this.#retry = setTimeout(() => {
          this.#retry = undefined
          void this.settle()
        }, RETRY_MS).unref()
      }
    })
    return this.#settling
  }

  /** Ends every claim and gives back what can be; stops retrying. */
  async close (): Promise<void> {
    this.#closed = true
    if (this.#parking.size > 0) await Promise.allSettled(this.#parking)
    for (const { claim, timer } of this.#parked.values()) {
      clearTimeout(timer)
      this.#ending.set(claim.id, claim)
    }
    this.#parked.clear()
    await this.#settling // one under way may have started before the last claims ended
    if (this.#ending.size > 0) await this.settle()
    clearTimeout(this.#retry)
  }

  async #settle (): Promise<void> {
    const tried = new Set<Claim>()
    for (let claim = this.#untried(tried); claim !== undefined; claim = this.#untried(tried)) {
      tried.add(claim)
      try {
        if (claim.blocked !== undefined) {
          // Without the right to end it (an ACL user without @admin), the claim waits for its lease.
          await this.#kill(claim.blocked).catch((err: unknown) => {
            if (!isReplyError(err)) throw err
            claim.mode = 'lease'
          })
          claim.blocked = undefined
        }
        // Another process' claim renewed meanwhile is its own again.
        if (await this.#giveBack(claim, claim.mode) || claim.swept) this.#ending.delete(claim.id)
      } catch (err) {
        this.#layer.log().debug({ err, channel: claim.channel }, 'could not give back a named channel\'s claim yet')
        if (err instanceof LayerTimeoutError) return
      }
    }
  }

  /** A claim given up that this settling has not tried yet (one may be given up while it runs). */
  #untried (tried: Set<Claim>): Claim | undefined {
    for (const claim of this.#ending.values()) if (!tried.has(claim)) return claim
    return undefined
  }

  /** Ends a blocking connection in Redis, unless Redis no longer has it (its id may be another's since). */
  async #kill (blocked: Blocked): Promise<void> {
    await this.#connections.run('receive', async client => {
      const listed = await client.call('CLIENT', 'LIST', 'ID', blocked.id) as string
      if (listed.includes(` name=${blocked.name} `)) await client.call('CLIENT', 'KILL', 'ID', blocked.id)
    })
  }

  /** A claim of this channel whose lease ran out: its process died, or lost Redis that long. */
  #leaseRanOut (channel: string, id: string): void {
    if (this.#ending.has(id)) return
    const claim = new Claim(channel, id, this.#keys.claim(channel, id), this.#keys.claims(channel), true)
    claim.mode = 'lease'
    this.giveUp(claim, undefined)
  }

  /**
   * Adds `s` to a pipeline: EVALSHA once Redis has it (an EVAL gives it to it), EVAL until then. A
   * NOSCRIPT reply (Redis restarted, or its scripts flushed) fails that script only: what it was to
   * remove stays recorded, and the next pop runs it again with EVAL.
   */
  #queueScript (pipeline: ChainableCommander, s: Script, keys: readonly string[], args: ReadonlyArray<string | number | Buffer>): void {
    if (this.#loaded.has(s)) pipeline.evalsha(s.sha, s.keys, ...keys, ...args)
    else pipeline.eval(s.lua, s.keys, ...keys, ...args)
  }

  /** Whether `s` ran (its reply's error is `err`), keeping track of whether Redis has it. */
  #scriptRan (s: Script, err: Error | null): boolean {
    if (err === null) this.#loaded.add(s)
    else if (lostScript([err, undefined])) this.#loaded.delete(s)
    return err === null
  }

  /**
   * Runs the giveBack script for `claim`, which also removes what it handed over (whatever the
   * lease); false when its lease still runs.
   */
  async #giveBack (claim: Claim, mode: 'own' | 'lease' | 'return'): Promise<boolean> {
    const removing = claim.removing()
    const reply = await this.#connections.run(`receive ${claim.channel}`, client =>
      runScript(client, giveBack, [claim.key, claim.claims, this.#keys.queue(claim.channel)], [claim.id, mode, ...removing])) as unknown[]
    claim.removed(removing)
    const [back, expired] = reply.map(Number)
    if (back === -1) return false
    if (expired > 0) this.#layer.expired(expired)
    if (back > 0 && mode !== 'return') {
      this.#layer.log().warn({ channel: claim.channel, messages: back },
        mode === 'lease'
          ? 'gave back to a named channel messages a pop took, from a claim whose lease ran out (its reader died or lost Redis: one it had just handed over, if any, runs again)'
          : 'gave back to a named channel messages that a pop took and never handed over')
    }
    return true
  }
}
