/**
 * What a connection holds only until its socket comes: the HTTP request waiting for the decision,
 * `connect()` under way, and a watch on the request's TCP socket for a client that leaves
 * meanwhile. The connection drops it once open, so an open connection carries none of it.
 */
import type { Socket } from 'node:net'
import type { Decision } from './runtime.js'

/** What the connection does when its client leaves before the upgrade. */
export interface HandshakeOwner {
  /** The request's TCP socket closed (a reset may come even before `connect()` runs). */
  clientGone: () => void
  /** The client ended its side (FIN), which Node leaves half open. */
  clientEnded: () => void
}

const noop = (): void => {}

export class Handshake {
  /** What the HTTP request waits for. */
  readonly decision: Promise<Decision>
  /** A WebSocket upgrade, counted as one once the socket comes; an HTTP consumer's response is not. */
  readonly upgrade: boolean
  /** The scope, the channel and `groups` being set up: a refusal frees the layer only once it has returned. */
  settingUp: Promise<void> | null = null
  /** `connect()` under way: the same. */
  connecting: Promise<void> | null = null
  /** The client went away while `connect()` runs: `signal` is aborted. */
  abandoned = false
  /** Accepted: a `close()` asked for before the socket came. */
  pendingClose: { code: number, reason: string } | null = null

  #decide: ((decision: Decision) => void) | null = null
  readonly #socket: Socket | null
  readonly #gone: () => void
  readonly #ended: () => void

  constructor (socket: Socket | null | undefined, upgrade: boolean, owner: HandshakeOwner) {
    this.decision = new Promise<Decision>(resolve => { this.#decide = resolve })
    this.upgrade = upgrade
    this.#socket = socket ?? null
    this.#gone = () => { owner.clientGone() }
    this.#ended = () => { owner.clientEnded() }
    // Removed once the socket is there (forget()): the TCP socket may outlive this connection.
    this.#socket?.once('close', this.#gone)
    this.#socket?.once('end', this.#ended)
  }

  /** The request's TCP socket is gone already. */
  get socketGone (): boolean {
    return this.#socket?.destroyed === true
  }

  /** Tells the HTTP request; only the first decision counts. */
  decide (decision: Decision): void {
    const decide = this.#decide
    this.#decide = null
    decide?.(decision)
  }

  /** Resolves once the set-up and `connect()` have returned or thrown (what never ran, at once). */
  async returned (): Promise<void> {
    await this.settingUp?.then(noop, noop)
    await this.connecting?.then(noop, noop)
  }

  /** Stops watching the request's TCP socket. */
  forget (): void {
    this.#socket?.off('close', this.#gone)
    this.#socket?.off('end', this.#ended)
  }
}
