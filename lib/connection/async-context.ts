/**
 * The async context a connection's tasks run in: the one of the request that opened it (what its
 * hooks put in an AsyncLocalStorage: @fastify/request-context's store, a tracer's span), never the
 * one of whoever pushed the task. A layer message is pushed by its sender (the in-memory layer
 * fans a groupSend() out in the sender's call, another user's request), a frame by the socket.
 *
 * Switching context (AsyncResource.runInAsyncScope) costs a delivery about 300 instructions, 5%,
 * which an app that keeps nothing in any AsyncLocalStorage would pay for nothing. Where Node keeps
 * a storage's value on the current async resource (internals.ts), a connection whose request held
 * no value needs no context of its own, and its task runs as it is unless the context it was
 * pushed from holds a value of the storages the app's requests have held (learned from those
 * requests); then it runs in a context without them. Where values are kept elsewhere, every task
 * switches.
 */
import { AsyncResource, executionAsyncResource } from 'node:async_hooks'
import { storageSymbolsOf } from '../internals.js'

// The symbols of the storages that held a value in a request that opened a connection.
const storages = new Set<symbol>()

// A context without the values of those storages, for a task pushed from one that has them.
const withoutValues = new AsyncResource('fastify-channels.task')

/**
 * The context of the request under way (called as its connection is made), to run its tasks in;
 * null when it holds no value of any storage.
 */
export function requestContext (): AsyncResource | null {
  const context = new AsyncResource('fastify-channels.connection')
  const symbols = storageSymbolsOf(context)
  if (symbols === undefined) return context
  for (const symbol of symbols) storages.add(symbol)
  return symbols.length > 0 ? context : null
}

/** Whether a request that opened a connection held a value of some storage: else no task needs a context of its own. */
export function storesValues (): boolean {
  return storages.size > 0
}

/** Where a task of a connection whose request context is `own` runs: in that, in one without values, or as it is (null). */
export function contextFor (own: AsyncResource | null): AsyncResource | null {
  if (own !== null || storages.size === 0) return own
  const current = executionAsyncResource() as Record<symbol, unknown>
  for (const symbol of storages) if (current[symbol] !== undefined) return withoutValues
  return null
}
