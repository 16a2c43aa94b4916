/**
 * The `channelLayer` a consumer sees: the real layer, except that memberships made with the
 * connection's own channel are counted. Group names often come from the client ("join room X"),
 * so a hostile client could otherwise make its consumer join groups without bound; past
 * `maxGroups` a `groupAdd` rejects with TooManyGroupsError. Knowing the memberships also lets the
 * connection leave them all at the end, even on a layer that cannot discard a whole channel.
 */
import type { ChannelLayer } from './layers/types.js'
import { TooManyGroupsError } from './errors.js'

export interface ConnectionLayer {
  /** What `this.channelLayer` is; everything but group membership passes straight through. */
  view: ChannelLayer
  /** Groups the connection's channel joined through `view` and has not left. */
  joined: ReadonlySet<string>
}

export function connectionLayer (layer: ChannelLayer, channel: string, maxGroups: number): ConnectionLayer {
  const joined = new Set<string>()

  async function groupAdd (group: string, member: string): Promise<void> {
    if (member !== channel || joined.has(group)) return layer.groupAdd(group, member)
    if (joined.size >= maxGroups) throw new TooManyGroupsError(channel, maxGroups)
    // Counted before the await, so joins started together cannot all pass the check.
    joined.add(group)
    try {
      await layer.groupAdd(group, member)
    } catch (err) {
      joined.delete(group)
      throw err
    }
  }

  async function groupDiscard (group: string, member: string): Promise<void> {
    await layer.groupDiscard(group, member)
    if (member === channel) joined.delete(group)
  }

  const own: Record<PropertyKey, unknown> = {
    groupAdd, group_add: groupAdd, groupDiscard, group_discard: groupDiscard
  }
  const bound = new Map<PropertyKey, { source: unknown, fn: unknown }>()
  const view = new Proxy(layer, {
    get (target, prop) {
      if (Object.hasOwn(own, prop)) return own[prop]
      const value: unknown = Reflect.get(target, prop, target)
      if (typeof value !== 'function') return value
      // Bound to the layer itself: its methods may use private fields a proxy receiver lacks.
      let entry = bound.get(prop)
      if (entry?.source !== value) {
        entry = { source: value, fn: value.bind(target) }
        bound.set(prop, entry)
      }
      return entry.fn
    }
  })
  return { view, joined }
}
