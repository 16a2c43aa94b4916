/**
 * `GroupsConsumer`: a ready JsonWebsocketConsumer that speaks one documented protocol
 * (lib/protocol.ts) — a client joins and leaves groups, gets their messages with their positions
 * and presence, and calls the actions the class lists. `fastify-channels/client` speaks it.
 *
 * What reaches app code is checked first: frames are read field by field (frames.ts), group names
 * by the layer's rules, `canJoin()` decides every join, and arguments pass the action's schema
 * (actions.ts). A frame that cannot be read is answered, not fatal: only a client that keeps
 * sending them is closed (1008).
 */
import type { Delivery, GroupAddOptions, GroupJoin, LayerMessage, PresenceEntry, PresenceInfo, StreamPosition } from '../layers/types.js'
import type { CallId, ErrorBody, ServerToClient } from '../protocol.js'
import type { WebsocketRouteHandler } from '../consumer.js'
import { JsonWebsocketConsumer, kRefuseFrame } from '../json-consumer.js'
import { kAtOnce, kSkipped, kStillHere, kUnmetered } from '../connection/tasks.js'
import { findHandlerByType, handlerNames, isPresenceEvent, kRoute, reserveNames, type MessageHandler } from '../dispatch.js'
import { assertGroupName } from '../layers/names.js'
import { ArgsTooLargeError, BadFrameError, JoinDeniedError, JoinFailedError, LayerClosedError, LayerTimeoutError, RemoteLayerError, TooManyGroupsError, UnknownActionError } from '../errors.js'
import { readFrame, callIdIn, echo, isJoin, isPing, show } from './frames.js'
import { forwardToClient } from './message-frame.js'
import { Strikes } from './strikes.js'
import { checkActions, errorBody, validateArgs, type ActionTable } from './actions.js'
import { REJOIN_MARK, Rejoins } from './rejoins.js'
import { Positions } from './positions.js'
import { joinedThrough } from '../connection/layer-view.js'

export type GroupsConsumerClass = (new () => GroupsConsumer) & { actions: ActionTable }

type Coded = Error & { code: string }

/** Groups a client left are remembered (up to this many) so their late messages are dropped quietly. */
const MAX_LEFT = 1000

const ignore = (): undefined => undefined

export class GroupsConsumer extends JsonWebsocketConsumer {
  /** What a client may call: `{ post: { schema } }` — each one a method of the class. */
  static actions: ActionTable = {}

  /** Groups one client may be in through `join` at once; one more gets FST_CHANNELS_TOO_MANY_GROUPS. */
  maxJoins = 100
  /** Largest call frame (bytes of its JSON); a larger one gets FST_CHANNELS_ARGS_TOO_LARGE. */
  maxArgsBytes = 64 * 1024
  /**
   * Unreadable frames tolerated: each one counts, the count drains by one a second, and past this
   * the connection closes with 1008. A client with a bug is told; only one that keeps at it is closed.
   */
  maxProtocolErrors = 10

  readonly #joined = new Set<string>()
  /** Join frames not held to the rate limit so far (kUnmetered). */
  #unmeteredJoins = 0
  readonly #left = new Set<string>()
  /** Groups joined again after a leave, while the membership before may still have messages queued. */
  readonly #rejoins = new Rejoins(this)
  /** Where the client stands in each joined group's history; a gap it fills is sent as live messages are. */
  readonly #positions = new Positions(this, (group, message, info) => forwardToClient(this, group, message, info))
  #frameBytes = 0
  #frameText: string | undefined = undefined
  // Protocol errors lately: past maxProtocolErrors, the client is closed.
  readonly #strikes = new Strikes()

  /** Checks `static actions` when the route is declared: a bad table fails there, not at the first call. */
  static override asHandler (this: GroupsConsumerClass): WebsocketRouteHandler {
    checkActions(this.name, this.actions, this.prototype)
    return super.asHandler()
  }

  /** Whether this connection's client may join `group`; may be async. Default: no group. */
  canJoin (group: string): boolean | Promise<boolean> {
    return false
  }

  /**
   * What this connection's membership of `group` shows in the group's presence list. Override it
   * to record presence: joins then also get the list, and presence events are forwarded.
   */
  presenceInfo (group: string): PresenceInfo | undefined | Promise<PresenceInfo | undefined> {
    return undefined
  }

  /**
   * What the client gets for a message of a group it joined: by default the message itself.
   * Return something else to reshape it, `undefined` to drop it; may be async.
   */
  forward (message: LayerMessage, info: Delivery): unknown {
    return message
  }

  override async receive (text: string | undefined, bytes: Buffer | undefined): Promise<void> {
    this.#frameBytes = text === undefined ? 0 : Buffer.byteLength(text)
    this.#frameText = text
    try {
      await super.receive(text, bytes)
    } finally {
      this.#frameText = undefined
    }
  }

  /** One protocol frame. */
  override async receiveJson (content: unknown): Promise<void> {
    const request = readFrame(content)
    switch (request.op) {
      case 'join': return await this.#join(request.group, request.since)
      case 'leave': return await this.#leave(request.group)
      case 'call': return await this.#call(request.id, request.action, request.args)
      case 'ping': return await this.#write({ op: 'pong' })
      default: return await this.#protocolError(request.error, request)
    }
  }

  /**
   * A `ping` is answered as it arrives, not in turn: the frames before it may wait for a long
   * action, and a client that hears nothing for two heartbeats gives its socket up.
   */
  [kAtOnce] (text: Buffer): boolean {
    if (!isPing(text)) return false
    this.#pong()
    return true
  }

  /**
   * Its frames are not read while more than 16 wait for a long action: its `ping` with them. A
   * `pong` unasked, every half second meanwhile, tells it the socket is alive.
   */
  [kStillHere] (): void {
    this.#pong()
  }

  #pong (): void {
    // A pong too late for its connection (it has ended) is nobody's concern.
    this.#write({ op: 'pong' }).catch(ignore)
  }

  /**
   * The client joins all its groups at once as it connects (and reconnects): a connection's first
   * `maxJoins` joins are not held to the plugin's `rateLimit`, which would close a client in more
   * groups than its burst allows, again at each reconnect. Past those, joins count as any frame.
   */
  [kUnmetered] (text: Buffer): boolean {
    if (this.#unmeteredJoins >= this.maxJoins || !isJoin(text)) return false
    this.#unmeteredJoins++
    return true
  }

  override async [kRefuseFrame] (reason: string): Promise<void> {
    await this.#protocolError(new BadFrameError(reason), { id: callIdIn(this.#frameText) })
  }

  // --- join and leave ---------------------------------------------------------------------------

  async #join (group: string, since: StreamPosition | undefined): Promise<void> {
    try {
      assertGroupName(group)
    } catch (err) {
      return await this.#refuseGroup(err as Coded, group, 'info')
    }
    const rejoin = this.#joined.has(group)
    // A group the consumer is a member of itself: its messages go to the consumer's handlers (a
    // kick, a logout), which a client's join would turn into data for it, and its leave end.
    if (!rejoin && this.#heldByConsumer(group)) {
      return await this.#refuseGroup(new JoinDeniedError(group), group, 'warn')
    }
    if (!rejoin && this.#joined.size >= this.maxJoins) {
      return await this.#refuseGroup(new TooManyGroupsError(this.channelName, this.maxJoins), group, 'info')
    }
    const withPresence = this.#recordsPresence()
    const options: GroupAddOptions = {}
    if (since !== undefined) options.since = since
    let refusal: Coded | undefined
    try {
      const allowed: unknown = await this.canJoin(group)
      if (allowed !== true) {
        // Refused either way; a value that is not a boolean ('yes', 1) is the app's mistake, and said so.
        if (allowed !== false) this.log.warn({ group, returned: typeof allowed, channel: this.channelName }, 'canJoin() returned something other than true or false; join refused')
        refusal = new JoinDeniedError(group)
      } else {
        const presence = withPresence ? await this.presenceInfo(group) : undefined
        if (presence !== undefined) options.presence = presence
      }
    } catch (err) {
      this.log.error({ err, group, channel: this.channelName }, 'canJoin() or presenceInfo() failed; join refused')
      refusal = new JoinFailedError(group)
    }
    if (refusal !== undefined) {
      // A re-join is asked again: refused now, the client is no longer in the group.
      if (rejoin && this.#joined.has(group)) await this.#forget(group, true)
      return await this.#refuseGroup(refusal, group, refusal instanceof JoinDeniedError ? 'info' : 'none')
    }
    if (this.#left.has(group)) await this.#rejoins.mark(group)
    // Before the join takes effect: its messages are queued behind this frame and must find it joined.
    this.#joined.add(group)
    this.#left.delete(group)
    let joined: GroupJoin | undefined
    let presence: PresenceEntry[] | undefined
    try {
      joined = await this.channelLayer.groupAdd(group, this.channelName, options)
      if (withPresence) presence = await this.channelLayer.presence(group)
    } catch (err) {
      if (!rejoin) await this.#forget(group, joined !== undefined)
      // The layer unavailable, or the connection's group limit: said to the client as they are.
      // Anything else (presenceInfo() returned what the layer refuses) is the app's: logged with
      // what went wrong, and the client told the join failed.
      if (isLayerAvailability(err)) return await this.#refuseGroup(err, group, 'warn')
      this.log.error({ err, group, channel: this.channelName }, 'join failed')
      return await this.#refuseGroup(new JoinFailedError(group), group, 'none')
    }
    this.#positions.joined(group, joined, since, rejoin)
    await this.#write({ op: 'joined', group, position: joined.position, recovered: joined.recovered, presence })
  }

  async #leave (group: string): Promise<void> {
    if (!this.#joined.has(group)) return
    await this.#forget(group, true)
  }

  /** The client is no longer in `group`: what is still queued for it is dropped. */
  async #forget (group: string, discard: boolean): Promise<void> {
    this.#rejoins.forget(group)
    this.#joined.delete(group)
    this.#positions.forget(group)
    this.#left.add(group)
    if (this.#left.size > MAX_LEFT) this.#left.delete(this.#left.values().next().value as string)
    if (!discard) return
    try {
      await this.channelLayer.groupDiscard(group, this.channelName)
    } catch (err) {
      // The membership goes with the connection at the latest; meanwhile its messages are dropped.
      this.log.warn({ err, group, channel: this.channelName }, 'could not leave a group; its messages are dropped')
    }
  }

  /** Whether the consumer's channel is in `group` by the consumer's own doing: its `groups`, or a join of its own. */
  #heldByConsumer (group: string): boolean {
    return (Array.isArray(this.groups) && this.groups.includes(group)) || joinedThrough(this.channelLayer).includes(group)
  }

  #recordsPresence (): boolean {
    return this.presenceInfo !== GroupsConsumer.prototype.presenceInfo
  }

  // --- calls ------------------------------------------------------------------------------------

  async #call (id: CallId, action: string, args: unknown): Promise<void> {
    if (this.#frameBytes > this.maxArgsBytes) {
      return await this.#replyError(id, new ArgsTooLargeError(this.#frameBytes, this.maxArgsBytes), 'info')
    }
    const ctor = this.constructor as GroupsConsumerClass
    const spec = Object.hasOwn(ctor.actions, action) ? ctor.actions[action] : undefined
    if (spec === undefined) return await this.#replyError(id, new UnknownActionError(show(action)), 'info')
    let result: unknown
    try {
      const checked = await validateArgs(this.scope.request, action, spec, args)
      result = await (this as unknown as Record<string, (args: unknown) => unknown>)[action](checked)
    } catch (err) {
      const { body, exposed } = errorBody(err, action)
      if (!exposed) this.log.error({ err, action, channel: this.channelName }, 'action failed')
      return await this.#replyError(id, body, exposed ? 'info' : 'none')
    }
    let text: string
    try {
      text = (this.constructor as typeof JsonWebsocketConsumer).encodeJson({ op: 'reply', id, result })
    } catch (err) {
      this.log.error({ err, action, channel: this.channelName }, 'action result cannot be sent as JSON')
      return await this.#replyError(id, errorBody(err, action).body, 'none')
    }
    await this.send(text)
  }

  // --- group messages ---------------------------------------------------------------------------

  /**
   * Layer messages of the client's groups go to the client whatever their type; those of groups
   * it left are dropped. Others are dispatched by type as in any consumer, except to an action.
   */
  [kRoute] (type: string, info: Delivery): MessageHandler | undefined {
    const group = info.group
    if (group !== undefined) {
      if (this.#joined.has(group)) return this.#rejoins.holds(group) ? ignore : this.#deliver
      if (this.#left.has(group)) return ignore
    }
    if (type === REJOIN_MARK) return this.#rejoins.arrived
    const { actions } = this.constructor as GroupsConsumerClass
    if (handlerNames(type).some(name => Object.hasOwn(actions, name))) return undefined
    return findHandlerByType(this, type)
  }

  #deliver (layerMessage: object, info: Delivery): Promise<void> | undefined {
    const message = layerMessage as LayerMessage
    const group = info.group as string
    if (isPresenceEvent(message.type)) {
      if (!this.#recordsPresence()) return undefined
      const entry = { channel: message.channel, info: message.info } as PresenceEntry
      return this.#write(message.type === 'presence.join' ? { op: 'presence', group, join: entry } : { op: 'presence', group, leave: entry })
    }
    const held = this.#positions.next(group, info)
    if (held !== undefined) return held.then(async sendable => { if (sendable) await this.#deliver(message, info) })
    return forwardToClient(this, group, message, info)
  }

  /** The layer skipped messages of a group for this channel, up to `info`: fetched from the history. */
  async [kSkipped] (info: Delivery): Promise<void> {
    const group = info.group
    // Skipped while the client was in the membership it left: nothing of the new one.
    if (group !== undefined && this.#rejoins.holds(group)) return
    if (group !== undefined && info.offset === undefined) return await this.#refreshPresence(group)
    await this.#positions.skipped(info)
  }

  /**
   * Presence announcements of the group were skipped for this channel (it was full: a burst of
   * joins or leaves): the client gets the whole list again, in a `joined` frame as after a re-join
   * that recovered, so its list is the truth again. Announcements after it apply on top.
   */
  async #refreshPresence (group: string): Promise<void> {
    if (!this.#joined.has(group) || !this.#recordsPresence()) return
    let presence: PresenceEntry[]
    try {
      presence = await this.channelLayer.presence(group)
    } catch (err) {
      this.log.warn({ err, group, channel: this.channelName }, 'presence announcements were skipped for this client and the list could not be read; it is sent again at its next join')
      return
    }
    if (!this.#joined.has(group)) return
    await this.#write({ op: 'joined', group, position: this.#positions.get(group) ?? null, recovered: true, presence, refresh: true })
  }

  // --- answers ----------------------------------------------------------------------------------

  #write (frame: ServerToClient): Promise<void> {
    return this.sendJson(frame)
  }

  async #refuseGroup (error: Coded, group: string, level: 'info' | 'warn' | 'none'): Promise<void> {
    if (level !== 'none') this.log[level]({ code: error.code, group: echo(group), channel: this.channelName }, error.message)
    await this.#write({ op: 'error', code: error.code, message: error.message, group: echo(group) })
  }

  async #replyError (id: CallId, error: ErrorBody, level: 'info' | 'none'): Promise<void> {
    if (level !== 'none') this.log.info({ code: error.code, id, channel: this.channelName }, error.message)
    await this.#write({ op: 'reply', id, error: { code: error.code, message: error.message } })
  }

  /** A frame that could not be read: answered, counted, and past `maxProtocolErrors` the end. */
  async #protocolError (error: Coded, about: { group?: string, id?: CallId }): Promise<void> {
    this.log.warn({ code: error.code, channel: this.channelName }, `protocol error: ${error.message}`)
    if (about.id !== undefined) await this.#replyError(about.id, error, 'none')
    else await this.#write({ op: 'error', code: error.code, message: error.message, group: about.group })
    if (this.#strikes.add() > this.maxProtocolErrors) {
      this.log.warn({ channel: this.channelName }, 'client keeps breaking the protocol; closing with 1008')
      await this.close(1008, 'too many protocol errors')
    }
  }
}

reserveNames(GroupsConsumer.prototype, ['maxJoins', 'maxArgsBytes', 'maxProtocolErrors'])

/** An error of the layer's availability, or of the connection's group limit, which a client may be told. */
function isLayerAvailability (err: unknown): err is Coded {
  return err instanceof LayerTimeoutError || err instanceof LayerClosedError || err instanceof RemoteLayerError || err instanceof TooManyGroupsError
}
