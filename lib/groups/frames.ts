/**
 * Reading a client's protocol frame (lib/protocol.ts): every field is checked here, so what the
 * consumer acts on is typed and nothing a client sent reaches `canJoin()` or an action unchecked.
 * A frame that cannot be read is refused with the error to answer it with; `group` or `id` is kept
 * when the frame had a usable one, so the client can tell which of its requests failed.
 */
import type { CallId } from '../protocol.js'
import { isPosition } from '../client/position.js'
import type { StreamPosition } from '../layers/types.js'
import { MAX_NAME_LENGTH } from '../layers/names.js'
import { BadFrameError, UnknownOpError } from '../errors.js'

export type Request =
  | { op: 'join', group: string, since: StreamPosition | undefined }
  | { op: 'leave', group: string }
  | { op: 'call', id: CallId, action: string, args: unknown }
  | { op: 'ping' }

export interface Refusal {
  op: 'refused'
  error: Error & { code: string }
  group?: string
  id?: CallId
}

const MAX_ID_LENGTH = 64

export function readFrame (content: unknown): Request | Refusal {
  if (content === null || typeof content !== 'object' || Array.isArray(content)) {
    return refuse('a frame is a JSON object with an "op"')
  }
  const frame = content as Record<string, unknown>
  const op = frame.op
  if (op === 'join' || op === 'leave') {
    const group = frame.group
    if (typeof group !== 'string') return refuse(`${op} needs a "group" string`)
    if (op === 'leave') return { op, group }
    const since = frame.since
    if (since !== undefined && !isPosition(since)) {
      return refuse('"since" must be { "offset": a non-negative integer, "epoch": a string }', { group: echo(group) })
    }
    return { op, group, since }
  }
  if (op === 'call') {
    const id = frame.id
    if (!isCallId(id)) return refuse(`call needs an "id": a string of 1–${MAX_ID_LENGTH} characters or a non-negative integer`)
    const action = frame.action
    if (typeof action !== 'string') return refuse('call needs an "action" string', { id })
    return { op, id, action, args: frame.args }
  }
  if (op === 'ping') return { op }
  if (op === undefined) return refuse('a frame needs an "op"')
  return { op: 'refused', error: new UnknownOpError(show(op)) }
}

/** A frame longer than this is no `ping` (`{"op":"ping"}` with room for spaces). */
const MAX_PING_BYTES = 64
/** A frame longer than this is no `join` (a group name and a position). */
const MAX_JOIN_BYTES = 1024

/** Whether a raw text frame is a `ping`, read before its turn (and cheaply: most frames are not). */
export function isPing (text: Buffer): boolean {
  return readsAs(text, MAX_PING_BYTES, 'ping', 'ping')
}

/** Whether `text`, no longer than `max` and holding `hint`, reads as a frame of `op`. */
function readsAs (text: Buffer, max: number, hint: string, op: string): boolean {
  if (text.length > max || !text.includes(hint)) return false
  try {
    return readFrame(JSON.parse(text.toString('utf8'))).op === op
  } catch {
    return false // read in turn, as the bad frame it is
  }
}

/** Whether a raw text frame is a `join`, read before its turn (most frames are not even parsed). */
export function isJoin (text: Buffer): boolean {
  return readsAs(text, MAX_JOIN_BYTES, '"join"', 'join')
}

function refuse (message: string, about: { group?: string, id?: CallId } = {}): Refusal {
  return { op: 'refused', error: new BadFrameError(message), ...about }
}

export function isCallId (id: unknown): id is CallId {
  if (typeof id === 'string') return id.length > 0 && id.length <= MAX_ID_LENGTH
  return Number.isSafeInteger(id) && (id as number) >= 0
}

/** A group name short enough to send back (a valid one always is). */
export function echo (group: string): string | undefined {
  return group.length < MAX_NAME_LENGTH ? group : undefined
}

/** A value from the network, shown in a message without letting it grow the message. */
export function show (value: unknown): string {
  const text = typeof value === 'string' ? value : JSON.stringify(value) ?? String(value)
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text)
}

/**
 * The id of a call frame the safe decoder refused (too deep, a prototype key): read with a plain
 * parse, so that the call is answered with a reply its client waits for, not a bare error.
 */
export function callIdIn (text: string | undefined): CallId | undefined {
  if (text === undefined) return undefined
  try {
    const frame = JSON.parse(text) as { op?: unknown, id?: unknown } | null
    return frame?.op === 'call' && isCallId(frame.id) ? frame.id : undefined
  } catch {
    return undefined
  }
}
