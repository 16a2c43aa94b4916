/**
 * The `channelLayer` a consumer sees: the real layer, except that memberships made with the
 * connection's own channel are counted. Group names often come from the client ("join room X"),
 * so a hostile client could otherwise make its consumer join groups without bound; past
 * `maxGroups` a `groupAdd` rejects with TooManyGroupsError. Knowing the memberships also lets the
 * connection leave them all at its end (`leaveLayer`), even on a layer that cannot discard a whole
 * channel.
 *
 * Its joins and leaves may be made without `await` (they take effect in call order either way):
 * one that fails while nothing waits on it goes to the connection as a handler's throw
 * (unawaited-failure.ts), never an unhandled rejection.
 *
 * There is one view per connection, so it is kept small: everything that only depends on the
 * layer (the forwarding of its properties, functions bound to it) is built once per layer, and a
 * view holds just its channel, its limit and its memberships.
 */
import { inspect } from 'node:util'
import type { ChannelLayer, GroupAddOptions, GroupJoin, LayerLogger } from '../layers/types.js'
import { canDiscardChannel } from '../layers/types.js'
import { ConnectionClosedError, TooManyGroupsError } from '../errors.js'
import { watched, type UnawaitedFailureOwner } from './unawaited-failure.js'

type AddMethod = ChannelLayer['groupAdd']
type DiscardMethod = ChannelLayer['groupDiscard']
type Fn = (...args: unknown[]) => unknown

interface ViewClass {
  new (channel: string, maxGroups: number, owner: UnawaitedFailureOwner): object
  /** Groups the view's channel joined through it and has not left. */
  joined (view: object): readonly string[]
  /** The connection is leaving the layer: its channel joins nothing more. */
  end (view: object): void
}

const viewClasses = new WeakMap<ChannelLayer, ViewClass>()
const viewClassSet = new WeakSet<ViewClass>()

/**
 * The class of the views of one layer. Its prototype chain ends in one Proxy of the layer, shared
 * by all views: a read gives the layer's current value, a function bound to the layer (its methods
 * may use private fields, so `this` must be the layer itself), the same bound function for as
 * long as the layer's property holds the same function; a write goes to the layer; `instanceof`
 * and `in` answer for the layer.
 */
function viewClassOf (layer: ChannelLayer): ViewClass {
  const target = layer as unknown as Record<PropertyKey, unknown>

  const bound = new Map<PropertyKey, { source: Fn, fn: Fn }>()
  const write = (prop: PropertyKey, value: unknown): void => { target[prop] = value }

  const rest = new Proxy(target, {
    get (_target, prop) {
      const value: unknown = Reflect.get(target, prop, target)
      if (typeof value !== 'function') return value
      let entry = bound.get(prop)
      if (entry?.source !== value) {
        entry = { source: value as Fn, fn: (value as Fn).bind(target) }
        bound.set(prop, entry)
      }
      return entry.fn
    },
    set: (_target, prop, value) => Reflect.set(target, prop, value, target)
  })
  const Base = function () {} as unknown as new () => object
  Base.prototype = rest

  class LayerView extends Base {
    readonly #channel: string
    readonly #maxGroups: number
    readonly #owner: UnawaitedFailureOwner
    #joined: Names = NONE
    #ended = false
    // Bound on first use: most views never read them.
    #boundAdd: AddMethod | undefined = undefined
    #boundDiscard: DiscardMethod | undefined = undefined

    constructor (channel: string, maxGroups: number, owner: UnawaitedFailureOwner) {
      super()
      this.#channel = channel
      this.#maxGroups = maxGroups
      this.#owner = owner
    }

    static joined (view: object): readonly string[] {
      const names = (view as LayerView).#joined
      return names instanceof Set ? [...names] : names
    }

    static end (view: object): void {
      (view as LayerView).#ended = true
    }

    async #groupAdd (group: string, member: string, options?: GroupAddOptions): Promise<GroupJoin> {
      // Made after the connection left the layer (a join nothing awaited, done after its wait),
      // the membership would outlive it until groupExpiry, a member nobody reads.
      if (this.#ended && member === this.#channel) throw new ConnectionClosedError(member, 'groupAdd() after the connection ended')
      const joined = this.#joined
      if (member !== this.#channel || includes(joined, group)) return await layer.groupAdd(group, member, options)
      if (count(joined) >= this.#maxGroups) throw new TooManyGroupsError(this.#channel, this.#maxGroups)
      // Counted before the await, so joins started together cannot all pass the check.
      this.#joined = withGroup(joined, group)
      try {
        return await layer.groupAdd(group, member, options)
      } catch (err) {
        this.#joined = withoutGroup(this.#joined, group)
        throw err
      }
    }

    async #groupDiscard (group: string, member: string): Promise<void> {
      await layer.groupDiscard(group, member)
      if (member === this.#channel) this.#joined = withoutGroup(this.#joined, group)
    }

    get groupAdd (): AddMethod {
      return (this.#boundAdd ??= (group, member, options) => watched(this.#groupAdd(group, member, options), this.#owner, 'a groupAdd() that nothing awaited'))
    }
    set groupAdd (value: unknown) { write('groupAdd', value) }
    get group_add (): AddMethod { return this.groupAdd } // eslint-disable-line camelcase
    set group_add (value: unknown) { write('group_add', value) } // eslint-disable-line camelcase
    get groupDiscard (): DiscardMethod {
      return (this.#boundDiscard ??= (group, member) => watched(this.#groupDiscard(group, member), this.#owner, 'a groupDiscard() that nothing awaited'))
    }
    set groupDiscard (value: unknown) { write('groupDiscard', value) }
    get group_discard (): DiscardMethod { return this.groupDiscard } // eslint-disable-line camelcase
    set group_discard (value: unknown) { write('group_discard', value) } // eslint-disable-line camelcase

    // What console.log(view) shows: the layer (as it did for a Proxy of it), unless the layer has its own.
    [inspect.custom] (_depth: number, options: object): string { return inspect(layer, options) }
  }

  return LayerView
}

/**
 * What `this.channelLayer` is for the connection of `channel` (`owner`, told of joins and leaves
 * that fail unawaited): everything but group membership passes straight through.
 */
export function layerView (layer: ChannelLayer, channel: string, maxGroups: number, owner: UnawaitedFailureOwner): ChannelLayer {
  let View = viewClasses.get(layer)
  if (View === undefined) {
    View = viewClassOf(layer)
    viewClasses.set(layer, View)
    viewClassSet.add(View)
  }
  return new View(channel, maxGroups, owner) as ChannelLayer
}

/**
 * Groups the view's channel joined through it (`layerView(…)`) and has not left, in the order
 * joined; none for null, or for a layer that is no view.
 */
export function joinedThrough (view: ChannelLayer | null): readonly string[] {
  const View = classOfView(view)
  return View === undefined ? NONE : View.joined(view as object)
}

/** The class of a view made by `layerView(…)`; undefined for null, or for a layer that is no view. */
function classOfView (view: ChannelLayer | null): ViewClass | undefined {
  const View = (view as { constructor?: unknown } | null)?.constructor as ViewClass | undefined
  return view === null || View === undefined || !viewClassSet.has(View) ? undefined : View
}

// A view's groups: an array of exactly their names while there are few (most connections join one
// or two, and a Set costs about 170 bytes even for one), a Set past SMALL.
type Names = readonly string[] | Set<string>
const NONE: readonly string[] = Object.freeze([])
const SMALL = 8

function includes (names: Names, group: string): boolean {
  return names instanceof Set ? names.has(group) : names.includes(group)
}

function count (names: Names): number {
  return names instanceof Set ? names.size : names.length
}

function withGroup (names: Names, group: string): Names {
  if (names instanceof Set) return names.add(group)
  return names.length < SMALL ? names.concat(group) : new Set(names).add(group)
}

function withoutGroup (names: Names, group: string): Names {
  if (!(names instanceof Set)) return names.filter(name => name !== group)
  names.delete(group)
  return names
}

/**
 * Frees the layer of a connection that ended: its channel and its memberships. A layer that can
 * discard a whole channel also drops memberships other code made with it, in one call. Otherwise
 * leave what is known: `groups` (maybe reassigned since) and what was joined through the view,
 * each step on its own so one bad group name does not leave the rest behind. From now on, the
 * view joins its channel to nothing more.
 */
export async function leaveLayer (layer: ChannelLayer, channel: string, groups: unknown, view: ChannelLayer | null, log: LayerLogger): Promise<void> {
  const View = classOfView(view)
  View?.end(view as object)
  const joined = View === undefined ? NONE : View.joined(view as object)
  const steps = canDiscardChannel(layer)
    ? [() => layer.discardChannel(channel)]
    : [...new Set([...(Array.isArray(groups) ? groups as string[] : []), ...joined])]
        .map(group => () => layer.groupDiscard(group, channel))
  for (const step of steps) {
    try {
      await step()
    } catch (err) {
      log.warn({ err, channel }, 'could not remove the connection from the channel layer')
    }
  }
}
