/**
 * The client's calls waiting for their reply, by id: each one settles exactly once — with its
 * reply, at its timeout, when the socket it was sent on drops, or when the client closes.
 */
import type { CallId, ReplyFrame } from '../protocol.js'
import { ChannelsClientError, CALL_TIMEOUT } from './errors.js'

interface PendingCall {
  text: string
  /** Sent on the current socket; unsent calls wait for the next one. */
  sent: boolean
  resolve: (result: unknown) => void
  reject: (err: ChannelsClientError) => void
  timer: ReturnType<typeof setTimeout>
}

export class Calls {
  readonly #pending = new Map<CallId, PendingCall>()
  #nextId = 0

  /**
   * Registers a call; `send` writes a frame (and returns false when there is no open socket);
   * `timedOut` is told when a call sent went unanswered.
   */
  add (action: string, args: unknown, timeout: number, send: (text: string) => boolean, timedOut: () => void): Promise<unknown> {
    const id = ++this.#nextId
    const text = JSON.stringify({ op: 'call', id, action, args })
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const sent = this.#pending.get(id)?.sent === true
        this.#pending.delete(id)
        reject(new ChannelsClientError(CALL_TIMEOUT, `no reply to "${action}" within ${timeout} ms`))
        if (sent) timedOut()
      }, timeout)
      this.#pending.set(id, { text, sent: send(text), resolve, reject, timer })
    })
  }

  /** A socket opened: the calls made meanwhile go out. */
  sendWaiting (send: (text: string) => boolean): void {
    for (const call of this.#pending.values()) if (!call.sent) call.sent = send(call.text)
  }

  reply ({ id, result, error }: ReplyFrame): void {
    const call = this.#pending.get(id)
    if (call === undefined) return
    // Read before the call is settled: a malformed error (null) throws here and the call still
    // waits for a good reply or its timeout.
    const failure = error === undefined ? undefined : new ChannelsClientError(error.code, error.message)
    this.#pending.delete(id)
    clearTimeout(call.timer)
    if (failure !== undefined) call.reject(failure)
    else call.resolve(result)
  }

  /** Rejects the calls already sent (`sentOnly`), or all of them, with `err`. */
  reject (err: ChannelsClientError, sentOnly: boolean): void {
    for (const [id, call] of this.#pending) {
      if (sentOnly && !call.sent) continue
      this.#pending.delete(id)
      clearTimeout(call.timer)
      call.reject(err)
    }
  }
}
