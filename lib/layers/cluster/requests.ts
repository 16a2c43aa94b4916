/**
 * Requests to the process that owns a channel: only it can add its channel to a group (it
 * subscribes the group's route) or discard the channel. The answer comes back to the asking
 * process' own inbox as a reply carrying the error code met there ('' when it succeeded).
 */
import { LayerClosedError, RemoteLayerError } from '../../errors.js'

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
