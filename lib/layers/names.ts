import { InvalidChannelNameError } from '../errors.js'

// Channels' naming rules, kept byte for byte so names travel unchanged between Django and Node.
const CHANNEL_NAME = /^[a-zA-Z\d\-_.]+(![\d\w\-_.]*)?$/
const GROUP_NAME = /^[a-zA-Z\d\-_.]+$/

/** Channel and group names must be strictly shorter than this. */
export const MAX_NAME_LENGTH = 100

function show (name: unknown): string {
  if (typeof name !== 'string') return name === null ? 'null' : typeof name
  // A pathological name must not turn into a pathological log line.
  return JSON.stringify(name.length > 40 ? `${name.slice(0, 40)}…` : name)
}

export function assertChannelName (name: unknown): asserts name is string {
  if (typeof name === 'string' && name.length < MAX_NAME_LENGTH && CHANNEL_NAME.test(name)) return
  throw new InvalidChannelNameError(`Invalid channel name ${show(name)}: expected fewer than ${MAX_NAME_LENGTH} ` +
    'ASCII letters, digits, "-", "_" or "." with an optional "!" part')
}

export function assertGroupName (name: unknown): asserts name is string {
  if (typeof name === 'string' && name.length < MAX_NAME_LENGTH && GROUP_NAME.test(name)) return
  throw new InvalidChannelNameError(`Invalid group name ${show(name)}: expected fewer than ${MAX_NAME_LENGTH} ` +
    'ASCII letters, digits, "-", "_" or "."')
}

/** Checks a `newChannel()` prefix by the name it would produce, so the limits are the channel's own. */
export function assertChannelPrefix (prefix: unknown, sample: string): asserts prefix is string {
  if (typeof prefix === 'string' && GROUP_NAME.test(prefix) && sample.length < MAX_NAME_LENGTH) return
  throw new InvalidChannelNameError(`Invalid channel prefix ${show(prefix)}: expected ASCII letters, digits, ` +
    `"-", "_" or "." leaving the new channel name shorter than ${MAX_NAME_LENGTH} characters`)
}

/** A name with `!` belongs to one process (made by `newChannel()`); others are shared queues. */
export function isProcessSpecific (channel: string): boolean {
  return channel.includes('!')
}

/**
 * The process token inside a name made by `newChannel()` (`prefix.<token>!<random>`), or undefined
 * for a named channel. A backend routes a message for a process-specific channel to this process.
 */
export function processTokenOf (channel: string): string | undefined {
  const bang = channel.indexOf('!')
  if (bang === -1) return undefined
  const dot = channel.lastIndexOf('.', bang)
  return dot === -1 ? undefined : channel.slice(dot + 1, bang)
}

/** Whether `token` is one a layer makes (`processToken`): 12 lowercase base-36 characters. */
export function isProcessToken (token: string): boolean {
  return PROCESS_TOKEN.test(token)
}

const PROCESS_TOKEN = /^[\da-z]{12}$/
