/**
 * The layer's `groups` option: which groups keep history and announce presence. Keys are exact
 * group names or prefixes ending in `*`; the longest matching key applies. A group that matches
 * no key has no policy and costs exactly what it did before policies existed.
 */
import { InvalidOptionError } from '../errors.js'
import { assertGroupName } from './names.js'
import { MAX_SECONDS, refuseUnknownOptions } from './arguments.js'
import type { GroupPolicy } from './types.js'

export const MAX_HISTORY_SIZE = 100_000

/** A checked policy; `historyTtlMs` in milliseconds. */
export interface Policy {
  readonly history: { readonly size: number, readonly ttlMs: number } | undefined
  readonly presenceEvents: boolean
}

// Looked-up names are cached, bounded: group names often come from clients.
const CACHE_LIMIT = 10_000

export class GroupPolicies {
  readonly #exact = new Map<string, Policy>()
  /** Longest prefix first. */
  readonly #prefixes: Array<[string, Policy]> = []
  readonly #cache = new Map<string, Policy | null>()

  constructor (groups: unknown) {
    if (groups === undefined) return
    if (typeof groups !== 'object' || groups === null || Array.isArray(groups)) {
      throw new InvalidOptionError('Channel layer option "groups" must be an object of group name (or prefix*) → policy')
    }
    for (const [key, value] of Object.entries(groups)) {
      const policy = checkPolicy(key, value)
      if (key.endsWith('*')) {
        const prefix = key.slice(0, -1)
        if (prefix !== '') checkName(key, prefix)
        this.#prefixes.push([prefix, policy])
      } else {
        checkName(key, key)
        this.#exact.set(key, policy)
      }
    }
    this.#prefixes.sort((a, b) => b[0].length - a[0].length)
  }

  /** True when no group has a policy: nothing to look up. */
  get empty (): boolean {
    return this.#exact.size === 0 && this.#prefixes.length === 0
  }

  /** The policy of `group`, or undefined. */
  of (group: string): Policy | undefined {
    if (this.empty) return undefined
    const exact = this.#exact.get(group)
    if (exact !== undefined) return exact
    let found = this.#cache.get(group)
    if (found === undefined) {
      found = this.#prefixes.find(([prefix]) => group.startsWith(prefix))?.[1] ?? null
      if (this.#cache.size >= CACHE_LIMIT) this.#cache.clear()
      this.#cache.set(group, found)
    }
    return found ?? undefined
  }
}

function checkName (key: string, name: string): void {
  try {
    assertGroupName(name)
  } catch {
    throw new InvalidOptionError(`groups: "${key}" is neither a group name nor a prefix of one followed by "*"`)
  }
}

const POLICY_OPTIONS: Readonly<Record<keyof GroupPolicy, true>> = { history: true, presenceEvents: true }

function checkPolicy (key: string, value: unknown): Policy {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidOptionError(`groups["${key}"] must be a policy object ({ history?, presenceEvents? })`)
  }
  refuseUnknownOptions(`groups["${key}"]`, value, POLICY_OPTIONS)
  const { history, presenceEvents } = value as GroupPolicy
  if (presenceEvents !== undefined && typeof presenceEvents !== 'boolean') {
    throw new InvalidOptionError(`groups["${key}"].presenceEvents must be a boolean`)
  }
  return { history: history === undefined ? undefined : checkHistory(key, history), presenceEvents: presenceEvents === true }
}

function checkHistory (key: string, history: unknown): { size: number, ttlMs: number } {
  const { size, ttl, ...rest } = (typeof history === 'object' && history !== null ? history : {}) as Record<string, unknown>
  if (typeof history !== 'object' || history === null || Object.keys(rest).length > 0) {
    throw new InvalidOptionError(`groups["${key}"].history must be { size, ttl }`)
  }
  if (typeof size !== 'number' || !Number.isInteger(size) || size < 1 || size > MAX_HISTORY_SIZE) {
    throw new InvalidOptionError(`groups["${key}"].history.size must be an integer from 1 to ${MAX_HISTORY_SIZE}, got ${String(size)}`)
  }
  if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl <= 0 || ttl > MAX_SECONDS) {
    throw new InvalidOptionError(`groups["${key}"].history.ttl must be a positive number of seconds, at most ${MAX_SECONDS}, got ${String(ttl)}`)
  }
  // Whole milliseconds: Redis takes the ttl as an integer (PEXPIRE), and both layers keep the same.
  return { size, ttlMs: Math.ceil(ttl * 1000) }
}
