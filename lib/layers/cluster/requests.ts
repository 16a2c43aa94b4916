/**
 * Requests to the process that owns a channel: only it can add its channel to a group (it
 * subscribes the group's route) or discard the channel. The request goes to the owner's inbox;
 * the answer comes back to the asking process' own inbox as a reply carrying the error code met
 * there ('' when it succeeded). A request to a process nobody hears is answered at once: that
 * process is gone, and its channel with it.
 */
import { LayerClosedError, RemoteLayerError } from '../../errors.js'
import type { JoinRequest } from '../arguments.js'
import { Envelope, reviveObject, type WireCodec } from '../codec.js'
import { withTimeout } from '../deadline.js'
import { assertChannelName, assertGroupName, isProcessToken, processTokenOf } from '../names.js'
import type { Policy } from '../policies.js'
import type { GroupJoin, LayerLogger, PresenceInfo, StreamPosition } from '../types.js'
import { NO_JOIN, type Memberships } from './memberships.js'
import type { Transport } from './transport.js'

export type OwnerOp = 'add' | 'discardChannel'

export interface Reply {
  /** '' when the request succeeded, else the `code` of the error the owner met. */
  code: string
  reason: string
  /** What the request produced (a GroupJoin for 'add'). */
  result?: unknown
}

const CLOSED: Reply = { code: 'FST_CHANNELS_LAYER_CLOSED', reason: 'the layer closed' }

export class Requests {
  readonly #pending = new Map<number, (reply: Reply) => void>()
  #lastId = 0

  /** Requests waiting for their reply: for leak checks. */
  get size (): number {
    return this.#pending.size
  }

  /** A new request: its id, and its reply. */
  open (): { id: number, reply: Promise<Reply> } {
    const id = ++this.#lastId
    const reply = new Promise<Reply>(resolve => this.#pending.set(id, resolve))
    return { id, reply }
  }

  settle (id: number, reply: Reply): void {
    this.#pending.get(id)?.(reply)
    this.#pending.delete(id)
  }

  forget (id: number): void {
    this.#pending.delete(id)
  }

  /** Every open request is answered "closed". */
  close (): void {
    for (const resolve of this.#pending.values()) resolve(CLOSED)
    this.#pending.clear()
  }
}

/** Throws what a reply means for the caller; returns for a success. */
export function checkReply (reply: Reply, op: OwnerOp, group: string, channel: string): void {
  if (reply.code === '') return
  if (reply.code === CLOSED.code) throw new LayerClosedError()
  const what = op === 'add' ? `add it to group "${group}"` : 'discard it'
  throw Object.assign(new RemoteLayerError(channel, what, reply.reason), { remoteCode: reply.code })
}

/** The reply describing `err`, an error met while answering a request. */
export function replyFor (err: unknown): Reply {
  const code = (err as { code?: unknown } | null)?.code
  return {
    code: typeof code === 'string' && code !== '' ? code : 'FST_CHANNELS_REMOTE_FAILED',
    reason: err instanceof Error ? err.message : String(err)
  }
}

/** What asking an owner, and answering as one, needs of the layer. */
export interface RequestContext {
  processToken: string
  codec: WireCodec
  transport: Transport
  memberships: Memberships
  policy: (group: string) => Policy | undefined
  closed: () => boolean
  log: () => LayerLogger
}

/** This process' side of the requests: those it asks other processes, and those it answers. */
export class OwnerRequests {
  readonly #pending = new Requests()
  readonly #context: RequestContext

  constructor (context: RequestContext) {
    this.#context = context
  }

  /** Requests waiting for their reply: for leak checks. */
  get size (): number {
    return this.#pending.size
  }

  /** Resolves with what the owner answered (a GroupJoin for 'add'). */
  async ask (owner: string, op: OwnerOp, group: string, channel: string, join?: JoinRequest): Promise<unknown> {
    const { codec, memberships, processToken, transport } = this.#context
    const what = op === 'add' ? `groupAdd ${group}` : `discardChannel ${channel}`
    await withTimeout(memberships.subscribeProcess(), transport.timeout, what) // the reply comes to our inbox
    const { id, reply } = this.#pending.open()
    try {
      const envelope = codec.encodeEnvelope([Envelope.request, id, processToken, op, group, channel, join?.since ?? null, join?.presence ?? null])
      const receivers = await transport.publish({ kind: 'process', token: owner }, envelope, what)
      // Nobody listens there: that process is gone, and so is the channel.
      if (receivers === 0) return NO_JOIN
      const answer = await withTimeout(reply, transport.timeout, what)
      checkReply(answer, op, group, channel)
      return answer.result
    } finally {
      this.#pending.forget(id)
    }
  }

  /** A request envelope from another process: carried out here, and answered to its inbox. */
  async answer (envelope: unknown[]): Promise<void> {
    const { closed, codec, memberships, processToken, transport } = this.#context
    const [, id, replyTo, op, group, channel, since, presence] = envelope
    if (closed() || typeof id !== 'number' || typeof replyTo !== 'string' || !isProcessToken(replyTo)) return
    let reply = { code: '', reason: '' }
    let result: GroupJoin | null = null
    try {
      assertChannelName(channel)
      if (processTokenOf(channel) !== processToken) throw new TypeError('not a channel of this process')
      if (op === 'add') {
        assertGroupName(group)
        // Checked by the asking process' facade.
        const join: JoinRequest = {
          since: since === null ? undefined : reviveObject(since) as unknown as StreamPosition,
          presence: presence === null ? undefined : reviveObject(presence) as PresenceInfo
        }
        result = await memberships.add(group, channel, join, this.#context.policy(group))
      } else if (op === 'discardChannel') {
        await memberships.discardChannel(channel)
      } else {
        throw new TypeError(`unknown request ${String(op)}`)
      }
    } catch (err) {
      reply = replyFor(err)
    }
    if (closed()) return
    await transport.publish({ kind: 'process', token: replyTo }, codec.encodeEnvelope([Envelope.reply, id, reply.code, reply.reason, result]), 'reply')
      .catch((err: unknown) => this.#context.log().warn({ err }, 'could not answer another process'))
  }

  /** A reply envelope from an owner: settles the request it answers. */
  settle (envelope: unknown[]): void {
    const [, id, code, reason, result] = envelope
    if (typeof id !== 'number') return
    this.#pending.settle(id, typeof code === 'string'
      ? { code, reason: typeof reason === 'string' ? reason : '', result: reviveJoin(result) }
      : { code: 'FST_CHANNELS_REMOTE_FAILED', reason: 'malformed reply' })
  }

  /** Every open request is answered "closed". */
  close (): void {
    this.#pending.close()
  }
}

/** The GroupJoin in an owner's reply (a decoded envelope element). */
function reviveJoin (value: unknown): GroupJoin | undefined {
  if (value === null || value === undefined) return undefined
  const { position, recovered } = reviveObject(value) as Partial<GroupJoin>
  return { position: position ?? null, recovered: recovered === true }
}
