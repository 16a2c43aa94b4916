/**
 * A GroupsConsumer's actions: the methods a client may call, listed in `static actions`, each with
 * an optional JSON schema for its arguments. Schemas are compiled by the app's own Fastify
 * validator compiler (the route's, through `request.compileValidationSchema()`: the app's Ajv
 * options and plugins apply, and each schema is compiled once per route), exactly as a route's
 * body schema would be.
 */
import type { FastifyRequest } from 'fastify'
import type { ErrorBody } from '../protocol.js'
import { isReservedName } from '../dispatch.js'
import { ActionFailedError, InvalidArgsError, InvalidOptionError, LayerTimeoutError } from '../errors.js'

/** One action: the JSON schema its arguments must pass, if any. */
export interface ActionSpec {
  // Any object: a schema typed as an interface (`JSONSchema7`, an app's own) has no index signature.
  schema?: object | undefined
}

export type ActionTable = Readonly<Record<string, ActionSpec>>

type Method = (...args: never[]) => unknown

// What JSON.stringify leaves out of an object, and writes as null in an array.
type Unwritten = undefined | symbol | ((...args: never[]) => unknown)

/**
 * A value as it arrives after `JSON.stringify` and `JSON.parse`: what has `toJSON()` (a `Date`)
 * as what that returns, properties JSON leaves out gone (optional where they may be: `x: string |
 * undefined` arrives as `x?: string`), array items it cannot write as null.
 */
export type Jsonified<T> =
  // unknown (an action typed Promise<unknown>) stays unknown: it may be null, or anything.
  unknown extends T ? unknown
  : T extends { toJSON: (...args: never[]) => infer R } ? Jsonified<R>
    : T extends string | number | boolean | null ? T
      : T extends Unwritten | bigint ? never
        : T extends ReadonlyArray<infer U> ? Array<U extends Unwritten ? null : Jsonified<U>>
          : Flat<{ [K in keyof T as Presence<T[K]> extends 'always' ? K : never]: Jsonified<T[K]> } &
            { [K in keyof T as Presence<T[K]> extends 'maybe' ? K : never]?: Jsonified<Exclude<T[K], Unwritten>> }>

// Whether JSON writes a property of this type: always, never, or depending on its value.
type Presence<V> = [V] extends [Unwritten] ? 'never' : [Extract<V, Unwritten>] extends [never] ? 'always' : 'maybe'

// One object type instead of an intersection, as an editor shows it.
type Flat<T> = { [K in keyof T]: T[K] }

/** A reply's result: nothing (an action that returns nothing) stays undefined. */
type Reply<T> = T extends undefined | void ? undefined : Jsonified<T>

/**
 * The actions of a GroupsConsumer class as the client sees them: each listed action's argument
 * type, taken from the method, and its (awaited) result as it arrives through JSON (a `Date` as
 * a string). `new ChannelsClient<ApiOf<typeof Rooms>>()` makes `client.call(name, args)` check
 * both at compile time.
 */
export type ApiOf<C extends { actions: object, prototype: object }> = {
  [K in keyof C['actions'] & keyof C['prototype'] & string]: C['prototype'][K] extends Method
    ? {
        args: Parameters<C['prototype'][K]> extends [] ? undefined : Parameters<C['prototype'][K]>[0]
        result: Reply<Awaited<ReturnType<C['prototype'][K]>>>
      }
    : never
}

/** Throws InvalidOptionError for a table that names something a client must not call. */
export function checkActions (name: string, actions: unknown, proto: object): void {
  const where = `${name}.actions`
  if (actions === null || typeof actions !== 'object' || Array.isArray(actions)) {
    throw new InvalidOptionError(`${where} must be an object of { schema? } by action name`)
  }
  for (const [action, spec] of Object.entries(actions)) {
    if (action.startsWith('_') || isReservedName(action, proto)) {
      throw new InvalidOptionError(`${where}: "${action}" cannot be an action (a name of the base classes, or private)`)
    }
    if (typeof (proto as Record<string, unknown>)[action] !== 'function') {
      throw new InvalidOptionError(`${where}: "${action}" is not a method of ${name}`)
    }
    const schema = (spec as ActionSpec | null)?.schema
    if (spec === null || typeof spec !== 'object' || (schema !== undefined && (schema === null || typeof schema !== 'object'))) {
      throw new InvalidOptionError(`${where}.${action} must be { schema?: a JSON schema object }`)
    }
  }
}

/** A validator as Fastify's compilers make them: Ajv's (boolean and `errors`) or one returning `{ error, value }`. */
type Validate = ((data: unknown, context?: { parentData: object, parentDataProperty: string }) => unknown) & { errors?: unknown, schemaEnv?: unknown }

/**
 * Checks `args` against the action's schema; gives the arguments the method gets (a compiler may
 * coerce or fill in defaults, as for a body), or throws InvalidArgsError. Validated as Fastify
 * validates a body: missing args as `null`, an Ajv validator given their parent so that it may
 * coerce the value itself (`"42"` to 42 against `{ type: 'integer' }`), and an async validator's
 * result read as pass or fail only. A schema with `$async` validates in a promise: then a promise
 * of the same, rejected with InvalidArgsError for a validation error, and with what it threw
 * otherwise (an error of the app's: logged, and FST_CHANNELS_ACTION_FAILED to the client).
 */
export function validateArgs (request: FastifyRequest, action: string, spec: ActionSpec, args: unknown): unknown {
  if (spec.schema === undefined) return args
  const validate = request.compileValidationSchema(spec.schema, 'body') as Validate
  const holder = { args: args === undefined ? null : args }
  // What the method gets: the args as validation left them, undefined for none that stayed none.
  const checked = (): unknown => args === undefined && holder.args === null ? undefined : holder.args
  const result = validate.schemaEnv !== undefined ? validate(holder.args, { parentData: holder, parentDataProperty: 'args' }) : validate(holder.args)
  if (typeof (result as PromiseLike<unknown> | undefined)?.then === 'function') {
    return Promise.resolve(result).then(passed => {
      if (passed === false) throw new InvalidArgsError(action, describe(validate.errors ?? 'args are invalid'))
      return checked()
    }, (err: unknown) => {
      // Ajv's ValidationError carries `errors`; anything else is no verdict on the args.
      const errors = (err as { errors?: unknown } | null)?.errors
      if (Array.isArray(errors)) throw new InvalidArgsError(action, describe(errors))
      throw err
    })
  }
  if (result === true) return checked()
  if (result === false) throw new InvalidArgsError(action, describe(validate.errors ?? 'args are invalid'))
  const outcome = result as { error?: unknown, value?: unknown } | undefined
  if (outcome?.error !== undefined && outcome.error !== null) throw new InvalidArgsError(action, describe(outcome.error))
  if (outcome !== undefined && outcome !== null && typeof outcome === 'object' && 'value' in outcome) return outcome.value
  return checked()
}

function describe (failure: unknown): string {
  if (Array.isArray(failure)) {
    return failure.map(e => {
      const { instancePath, message } = e as { instancePath?: string, message?: string }
      return `args${instancePath ?? ''} ${message ?? 'is invalid'}`
    }).join(', ')
  }
  return failure instanceof Error ? failure.message : String(failure)
}

/**
 * What the client learns of a failed action. An error meant for the client — a 4xx `statusCode`
 * (as Fastify's errors and @fastify/error's carry) with a string `code` — is sent as it is, and so
 * is the layer's LayerTimeoutError; any other is the app's bug: logged by the caller and answered
 * with FST_CHANNELS_ACTION_FAILED.
 */
export function errorBody (err: unknown, action: string): { body: ErrorBody, exposed: boolean } {
  const { statusCode, code, message } = (err ?? {}) as { statusCode?: unknown, code?: unknown, message?: unknown }
  if (typeof statusCode === 'number' && statusCode >= 400 && statusCode < 500 && typeof code === 'string') {
    return { body: { code, message: typeof message === 'string' ? message : code }, exposed: true }
  }
  // The layer's backend did not answer (an outage): not the app's bug, and worth trying again, as
  // a join that failed so is.
  if (err instanceof LayerTimeoutError) return { body: { code: err.code, message: err.message }, exposed: true }
  const failed = new ActionFailedError(action)
  return { body: { code: failed.code, message: failed.message }, exposed: false }
}
