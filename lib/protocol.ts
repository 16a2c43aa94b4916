/**
 * The JSON protocol that GroupsConsumer and ChannelsClient speak, one text frame per object
 * (the README's "The wire protocol" says what each frame means). Types only: nothing here reaches
 * the client's bundle, and nothing here imports a server module.
 */
import type { PresenceEntry, StreamPosition } from './layers/types.js'

/** A call's id: a string of 1–64 characters or a non-negative integer, chosen by the client. */
export type CallId = string | number

// client → server

export interface JoinFrame { op: 'join', group: string, since?: StreamPosition }
export interface LeaveFrame { op: 'leave', group: string }
export interface CallFrame { op: 'call', id: CallId, action: string, args?: unknown }
/** Is the connection still alive? Answered with a `pong`. */
export interface PingFrame { op: 'ping' }
export type ClientToServer = JoinFrame | LeaveFrame | CallFrame | PingFrame

// server → client

export interface JoinedFrame {
  op: 'joined'
  group: string
  position: StreamPosition | null
  recovered: boolean
  /** The group's presence list, when the consumer records presence. */
  presence?: PresenceEntry[]
  /** Sent unasked: the whole presence list again, not the answer to a join. */
  refresh?: true
}
export interface MessageFrame { op: 'message', group: string, offset?: number, epoch?: string, data: unknown }
export interface PresenceFrame { op: 'presence', group: string, join?: PresenceEntry, leave?: PresenceEntry }
export interface ErrorBody { code: string, message: string }
export interface ReplyFrame { op: 'reply', id: CallId, result?: unknown, error?: ErrorBody }
/** A frame the server could not act on; `group` names the join or leave it answers. */
export interface ErrorFrame extends ErrorBody { op: 'error', group?: string }
export interface PongFrame { op: 'pong' }
export type ServerToClient = JoinedFrame | MessageFrame | PresenceFrame | ReplyFrame | ErrorFrame | PongFrame

/**
 * What a client may call: each action's arguments and result. `ApiOf<typeof SomeConsumer>`
 * derives it from the server's class.
 */
export type ApiShape = { [action: string]: { args: unknown, result: unknown } }
