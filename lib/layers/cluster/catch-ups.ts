/**
 * What the joins that read a catch-up (memberships.ts) need from the group's live stream: the live
 * messages held back for each joining channel until its read answers, and afterwards the position
 * that read reached, below which the stream's own copies are not given to that channel again.
 */
import { cloneMessage } from '../message.js'
import type { Delivery, LayerMessage, StreamPosition } from '../types.js'

export interface Held {
  message: LayerMessage
  info: Delivery
}

export class CatchUps {
  /** group → channel → live messages held back while that channel's join reads what it missed. */
  readonly #joining = new Map<string, Map<string, Held[]>>()
  /** group → channel → the position its join read up to, until the live stream gets there. */
  readonly #floors = new Map<string, Map<string, StreamPosition>>()

  /** Holds the group's live messages back for `channel` from now on, in the array returned. */
  hold (group: string, channel: string): Held[] {
    let joining = this.#joining.get(group)
    if (joining === undefined) {
      joining = new Map()
      this.#joining.set(group, joining)
    }
    const held: Held[] = []
    joining.set(channel, held)
    return held
  }

  /** Stops holding messages back for `channel`. */
  release (group: string, channel: string): void {
    const joining = this.#joining.get(group)
    if (joining === undefined) return
    joining.delete(channel)
    if (joining.size === 0) this.#joining.delete(group)
  }

  /** Whether a channel's join in `group` is still reading. */
  joining (group: string): boolean {
    return this.#joining.has(group)
  }

  /**
   * The join's read answered: `channel` gets what it missed (`replay`, when the read holds all of
   * it), then the messages held for it that the read did not include (offset above the position).
   * Until the live stream reaches the position, its copies are not given to the channel again.
   */
  caughtUp (group: string, channel: string, held: Held[], position: StreamPosition | null, replay: Array<[number, LayerMessage]> | undefined, deliver: (message: LayerMessage, info: Delivery) => void): void {
    this.release(group, channel)
    if (replay !== undefined && position !== null) {
      for (const [offset, message] of replay) deliver(message, { group, offset, epoch: position.epoch })
    }
    const top = position?.offset ?? 0
    let reached = 0
    for (const { message, info } of held) {
      const offset = info.offset ?? 0
      if (offset > reached) reached = offset
      if (info.offset === undefined || offset > top) deliver(message, info)
    }
    if (position !== null && reached < top) this.#setFloor(group, channel, position)
  }

  #setFloor (group: string, channel: string, position: StreamPosition): void {
    let floors = this.#floors.get(group)
    if (floors === undefined) {
      floors = new Map()
      this.#floors.set(group, floors)
    }
    floors.set(channel, position)
  }

  /**
   * A live message of the group: a copy is held for each joining channel. Returns the members that
   * already have it (their read included it); floors the stream has reached are lifted.
   */
  live (group: string, message: LayerMessage, info: Delivery): Set<string> | undefined {
    const joining = this.#joining.get(group)
    if (joining !== undefined) for (const held of joining.values()) held.push({ message: cloneMessage(message), info })
    const floors = this.#floors.get(group)
    if (floors === undefined) return undefined
    let skip: Set<string> | undefined
    // A presence announcement takes no offset: it says nothing of where the stream is.
    if (info.offset === undefined) return undefined
    for (const [channel, floor] of floors) {
      if (info.epoch !== floor.epoch) {
        floors.delete(channel)
        continue
      }
      if (info.offset <= floor.offset) (skip ??= new Set()).add(channel)
      if (info.offset >= floor.offset) floors.delete(channel)
    }
    if (floors.size === 0) this.#floors.delete(group)
    return skip
  }

  /** The group has no local member any more. */
  forgetGroup (group: string): void {
    this.#floors.delete(group)
  }

  clear (): void {
    this.#joining.clear()
    this.#floors.clear()
  }
}

/** Whether `missed` holds every message after `since` up to `position`. */
export function holdsAllSince (since: StreamPosition, position: StreamPosition, missed: ReadonlyArray<readonly [number, unknown]>): boolean {
  if (since.epoch !== position.epoch || since.offset > position.offset) return false
  if (since.offset === position.offset) return true
  return missed.length > 0 && missed[0][0] === since.offset + 1 && missed[missed.length - 1][0] === position.offset
}
