/**
 * Prometheus metrics, with `prom-client` (an optional peer dependency) and a registry the app owns.
 *
 * Nothing is counted through prom-client on the hot path: connections, the plugin and the layer
 * keep plain integer counts (RouteCounts here, `layer.stats`), and each metric reads them when the
 * registry is scraped. Only the layer's operation times are observed as they happen, and only
 * when metrics are on. Routes label what belongs to a connection (a few consumer routes: a low,
 * fixed cardinality); the layer's metrics have no route.
 */
import { InvalidOptionError } from './errors.js'
import { canTimeOperations, type ChannelLayer } from './layers/types.js'

/** What the plugin needs of prom-client's Registry (typed here so apps without prom-client compile). */
export interface MetricsRegistry {
  registerMetric (metric: never): void
  getSingleMetric (name: string): unknown
}

export interface MetricsOptions {
  /** A prom-client `Registry`: the metrics are registered there (e.g. `prom-client`'s default `register`). */
  registry: MetricsRegistry
}

/** A consumer route's counts; a connection holds its route's and adds to them. */
export class RouteCounts {
  readonly handshakes = new Map<number, number>()
  open = 0
  framesReceived = 0
  framesSent = 0
  handlerErrors = 0
  slowReaders = 0
  rateLimited = 0
  /** Layer messages a connection had taken and never handled: it ended first. */
  unhandled = 0
  /** Layer messages of a type the consumer has no handler for. */
  noHandler = 0

  handshake (status: number): void {
    this.handshakes.set(status, (this.handshakes.get(status) ?? 0) + 1)
  }
}

/** Every route's counts, made on first use; and the workers' failures, by channel. */
export class Counts {
  readonly routes = new Map<string, RouteCounts>()
  readonly workerErrors = new Map<string, number>()
  /** Messages workers had no handler for. */
  workerNoHandler = 0

  /** A worker serves `channel`: its series is there, at 0, before its first failure. */
  workerStarted (channel: string): void {
    if (!this.workerErrors.has(channel)) this.workerErrors.set(channel, 0)
  }

  workerFailed (channel: string): void {
    this.workerErrors.set(channel, (this.workerErrors.get(channel) ?? 0) + 1)
  }

  of (route: string): RouteCounts {
    let counts = this.routes.get(route)
    if (counts === undefined) {
      counts = new RouteCounts()
      this.routes.set(route, counts)
    }
    return counts
  }
}

/** What a layer built on BaseChannelLayer counts (see `layer.stats`); other layers count nothing. */
interface LayerCounts {
  groupSends?: number
  deliveries?: number
  groupSendSkipped?: number
  directSendDropped?: number
  expired?: number
  discarded?: number
  undecryptable?: number
  reconnects?: number
}

export function checkMetricsOptions (metrics: unknown): void {
  if (metrics === undefined) return
  const registry = (metrics as { registry?: Partial<MetricsRegistry> } | null)?.registry
  if (typeof registry?.registerMetric !== 'function' || typeof registry.getSingleMetric !== 'function') {
    throw new InvalidOptionError('option "metrics" must be { registry } with a prom-client Registry')
  }
}

type PromClient = typeof import('prom-client')

const PREFIX = 'fastify_channels_'
const OP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

/**
 * Registers the metrics in `options.registry`; returns what takes them out again and unhooks the
 * layer's timing (at the app's close). Fails with InvalidOptionError when prom-client cannot be
 * loaded or a name is taken in that registry (by another plugin instance, or by a metric of the
 * app's): then none of the plugin's is left there.
 */
export async function registerMetrics (options: MetricsOptions, counts: Counts, layer: ChannelLayer): Promise<() => void> {
  let prom: PromClient
  try {
    prom = await import('prom-client')
  } catch (err) {
    throw Object.assign(new InvalidOptionError('option "metrics" needs prom-client: npm install prom-client'), { cause: err })
  }
  const registry = options.registry as unknown as InstanceType<PromClient['Registry']>
  if (registry.getSingleMetric(`${PREFIX}connections`) !== undefined) {
    throw new InvalidOptionError('option "metrics": this registry already has fastify-channels metrics (one plugin instance per registry)')
  }
  const names: string[] = []
  const remove = (): void => { for (const name of names) registry.removeSingleMetric(name) }
  let ops: ReturnType<typeof defineMetrics>
  try {
    ops = defineMetrics(prom, registry, counts, layer, names)
  } catch (err) {
    remove()
    throw Object.assign(new InvalidOptionError(`option "metrics": ${err instanceof Error ? err.message : String(err)}`), { cause: err })
  }
  const timed = canTimeOperations(layer)
  if (timed) layer.timeOperations((op, seconds) => ops.observe({ op }, seconds))
  return () => {
    if (timed) layer.timeOperations(undefined)
    // The registry may outlive the app (prom-client's default one): another may register there next.
    remove()
  }
}

/**
 * Defines every metric in `registry`, each name added to `names` once it is registered there;
 * returns the histogram of the layer's operations. Throws prom-client's error for a name taken.
 */
function defineMetrics (prom: PromClient, registry: InstanceType<PromClient['Registry']>, counts: Counts, layer: ChannelLayer, names: string[]) {
  const registers = [registry]
  const routes = (): Array<[string, RouteCounts]> => [...counts.routes]
  const stats = (): LayerCounts => ((layer as { stats?: LayerCounts }).stats ?? {})

  // A counter that reports running totals kept elsewhere: it adds what grew since the last scrape,
  // one series per set of label values.
  const totals = <L extends string>(name: string, help: string, labelNames: L[], read: () => Iterable<[Record<L, string>, number]>): void => {
    const reported = new Map<string, number>()
    void new prom.Counter<L>({
      name: PREFIX + name,
      help,
      labelNames,
      registers,
      collect () {
        for (const [labels, now] of read()) {
          const key = JSON.stringify(labels)
          const before = reported.get(key)
          // A series is there from the first scrape, at 0: Prometheus' increase() sees its first count.
          if (before === undefined || now > before) this.inc(labels, now - (before ?? 0))
          reported.set(key, now)
        }
      }
    })
    names.push(PREFIX + name)
  }
  const total = (name: string, help: string, read: () => number): void => {
    totals(name, help, [], () => [[{}, read()]])
  }
  const perRoute = (pick: (c: RouteCounts) => number) => function * (): Iterable<[Record<'route', string>, number]> {
    for (const [route, c] of routes()) yield [{ route }, pick(c)]
  }

  void new prom.Gauge<'route'>({
    name: `${PREFIX}connections`,
    help: 'Open connections (WebSocket and HTTP consumers), by route',
    labelNames: ['route'],
    registers,
    collect () {
      for (const [route, c] of routes()) this.set({ route }, c.open)
    }
  })
  names.push(`${PREFIX}connections`)
  totals('handshakes_total', 'Handshakes answered by consumer routes, by HTTP status (101: accepted)', ['route', 'status'], function * () {
    for (const [route, c] of routes()) for (const [status, n] of c.handshakes) yield [{ route, status: String(status) }, n]
  })
  totals('frames_received_total', 'Frames received from clients', ['route'], perRoute(c => c.framesReceived))
  totals('frames_sent_total', 'Frames sent to clients', ['route'], perRoute(c => c.framesSent))
  totals('handler_errors_total', 'Consumer code that threw: connect() (the handshake answered 500), a handler or a spawned task (the connection closed with 1011)', ['route'], perRoute(c => c.handlerErrors))
  totals('worker_errors_total', 'Worker handlers that threw, by channel (each logged; the worker goes on with the next message)', ['channel'], function * () {
    for (const [channel, n] of counts.workerErrors) yield [{ channel }, n]
  })
  total('group_sends_total', 'groupSend() calls made in this process', () => stats().groupSends ?? 0)
  total('deliveries_total', 'Layer messages handed to a consumer, worker or receive() in this process', () => stats().deliveries ?? 0)
  totals('dropped_total', 'Messages dropped (full: a full channel; expired: never received in time; decrypt: no key opened it; ' +
    'closed: never handled, its connection ended first; no_handler: of a type its consumer or worker has no handler for) ' +
    'and connections closed (slow_reader: too much queued for it; rate_limited: sent too fast)', ['reason'], function * () {
    const s = stats()
    yield [{ reason: 'full' }, (s.groupSendSkipped ?? 0) + (s.directSendDropped ?? 0)]
    yield [{ reason: 'expired' }, s.expired ?? 0]
    yield [{ reason: 'decrypt' }, s.undecryptable ?? 0]
    let slow = 0
    let limited = 0
    let unhandled = 0
    let noHandler = counts.workerNoHandler
    for (const [, c] of routes()) {
      slow += c.slowReaders
      limited += c.rateLimited
      unhandled += c.unhandled
      noHandler += c.noHandler
    }
    yield [{ reason: 'closed' }, (s.discarded ?? 0) + unhandled]
    yield [{ reason: 'no_handler' }, noHandler]
    yield [{ reason: 'slow_reader' }, slow]
    yield [{ reason: 'rate_limited' }, limited]
  })
  total('layer_reconnects_total', 'Times the channel layer got its backend back after losing it', () => stats().reconnects ?? 0)
  const ops = new prom.Histogram<'op'>({
    name: `${PREFIX}layer_op_seconds`,
    help: 'Time channel layer operations take, by operation',
    labelNames: ['op'],
    buckets: OP_BUCKETS,
    registers
  })
  names.push(`${PREFIX}layer_op_seconds`)
  return ops
}
