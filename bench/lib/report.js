// Renders bench/results/latest.md from the rows of latest.json.
//   node bench/lib/report.js [<dir>]   renders <dir>/latest.md again (default bench/results), from
//                                      its latest.json and latest-meta.json
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const COUNTERPART = {
  'channels-memory': { floor: 'ws-memory', rival: 'socketio-memory' },
  'channels-redis': { floor: 'ws-redis', rival: 'socketio-redis' },
  'channels-memory-shared': { floor: 'ws-memory' },
  'channels-redis-shared': { floor: 'ws-redis' },
  'channels-memory-metrics': { floor: 'ws-memory' },
  'channels-memory-durable': { floor: 'ws-memory' },
  'channels-redis-durable': { floor: 'ws-redis' },
  'channels-sse-memory': { floor: 'ws-memory' },
  'channels-sse-redis': { floor: 'ws-redis' },
  'socketio-memory': { floor: 'ws-memory' },
  'socketio-redis': { floor: 'ws-redis' }
}

// A row whose core read slower than this share of the run's fastest is noted (and, by
// bench/run.js, measured again).
export const SLOW_CORE = 0.9

/** A row's readings of the core's speed, before and after its target (none in --smoke). */
export function speedsOf (r) {
  return [r.cpu0Speed, r.cpu0SpeedAfter].filter(v => typeof v === 'number')
}

/** A row's slowest reading of the core as a share of `fastest`; 1 for a row without readings. */
export function slowestCore (r, fastest) {
  const own = speedsOf(r)
  return own.length === 0 ? 1 : Math.min(...own) / fastest
}

/**
 * Of two attempts at one target (bench/run.js, --retry-slow), the one to keep: a measured one
 * over one that failed, then the one whose core read the steadier. `kept` is undefined at first.
 */
export function keptAttempt (kept, row, fastest) {
  if (kept === undefined || (kept.error !== undefined && row.error === undefined)) return row
  if (row.error !== undefined) return kept
  return slowestCore(row, fastest) > slowestCore(kept, fastest) ? row : kept
}

export function renderMarkdown (rows, meta) {
  const m = meta.machine
  const lines = []
  lines.push('# fastify-channels bench results', '')
  lines.push(`Command: \`${meta.command}\` (${meta.mode} mode), started ${meta.started}.`, '')
  lines.push(`Machine: ${m.cpu}, ${m.cpus} CPUs, ${m.memoryGiB} GiB, ${m.os}, Node ${m.node}; ` +
    `${m.pinned ? 'servers pinned to CPU 0, load generators to CPU 1 (Redis, when used, is not pinned)' : 'NOT pinned'}; ` +
    `${m.generators} generator processes. ` +
    Object.entries(m.versions).map(([k, v]) => `${k} ${v}`).join(', ') + '.', '')
  const avail = rows.flatMap(r => [r.cpu0Available, r.cpu0AvailableAfter]).filter(a => typeof a === 'number')
  if (avail.length > 0) {
    lines.push(`CPU available to a busy process on the servers' core, measured before${rows.some(r => r.cpu0AvailableAfter !== undefined) ? ' and after' : ''} each target: ${Math.min(...avail).toFixed(2)}–${Math.max(...avail).toFixed(2)} ` +
      '(1.00 = an idle machine; lower means other jobs or the host took the rest, and every number below is that much worse).', '')
  }
  // The core's speed on a fixed task, before and after each target, against the run's fastest
  // reading: a row whose readings fall short of it ran on a slower host than the others.
  const speeds = rows.flatMap(speedsOf)
  const fastest = Math.max(...speeds)
  if (speeds.length > 0) {
    lines.push(`Speed of the servers' core on a fixed task (JSON round trips), before and after each target, against the run's fastest reading: ${(Math.min(...speeds) / fastest).toFixed(2)}–1.00 ` +
      `(a row below ${SLOW_CORE} is noted: the host ran it slower than the others).`, '')
  }
  lines.push('| scenario | target | conns | groups | payload B | max deliveries/s | × floor | kept up with | × floor | deliveries per server CPU-s | × floor | p50 ms | p99 ms | at deliveries/s | CPU µs/delivery | RSS KiB/conn | lost | notes |')
  lines.push('|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|')
  for (const r of rows) {
    if (r.error !== undefined) {
      lines.push(`| ${r.scenario} | ${r.target} | ${r.connections} | ${r.groups} | ${r.payloadBytes} | – | – | – | – | – | – | – | – | – | – | – | – | ${r.unavailable ? 'not available: ' : 'error: '}${escape(r.error)} |`)
      continue
    }
    const floorName = r.target === 'ws-memory' || r.target === 'ws-redis' ? r.target : COUNTERPART[r.target.replace(/-alt\d+$/, '')]?.floor
    const floor = find(rows, r.scenario, floorName)
    const notes = []
    const max = maxOf(r)
    if (max.fromSaturation) notes.push('max from the saturation step')
    if (max.lowerBound) notes.push('max is a lower bound (generator-bound or never saturated)')
    const slowest = slowestCore(r, fastest)
    if (slowest < SLOW_CORE) notes.push(`core at ${slowest.toFixed(2)} of the run's fastest around this target`)
    if (r.coreRetries > 0) notes.push(`measured ${r.coreRetries + 1} times (core slow), the steadiest kept`)
    if (r.starved) notes.push('search ended by a step where the servers were starved of CPU by other jobs')
    if (r.fixedKeptUp === false) notes.push('overloaded at the fixed rate')
    if (r.p99Windows !== undefined && tailFromSpell(r)) notes.push(`p99 from a spell: its slow deliveries fell in ${r.p99Windows} of ${r.windows} windows of 100 ms`)
    if (r.repeats !== undefined) notes.push(`median of ${r.repeats.length}: ${r.repeats.map(x => num(x.deliveriesPerSec ?? x.deliveriesPerCpuSecond)).join(' / ')}`)
    if (r.idleCpuMsPerSec != null) notes.push(`idle: ${r.idleCpuMsPerSec} ms CPU/s per 10,000 connections${r.idleRedisCpuMsPerSec == null ? '' : `, +${r.idleRedisCpuMsPerSec} Redis`}`)
    if (r.redisCpuUsPerDelivery !== undefined) notes.push(`+${r.redisCpuUsPerDelivery} µs Redis CPU/delivery`)
    if (r.lostWhenOverloaded > 0) notes.push(`${r.lostWhenOverloaded} lost past saturation`)
    if (r.dups > 0) notes.push(`${r.dups} duplicates`)
    if (r.groupSendSkipped > 0) notes.push(`groupSend skipped ${r.groupSendSkipped}`)
    if (r.publishErrors > 0) notes.push(`${r.publishErrors} publishes rejected`)
    lines.push(`| ${r.scenario} | ${r.target} | ${r.connections} | ${r.groups} | ${r.payloadBytes} | ` +
      `${max.lowerBound ? '≥ ' : ''}${num(max.value)} | ${ratio(max.value, floor === undefined ? undefined : maxOf(floor).value)} | ` +
      `${r.maxIsLowerBound ? '≥ ' : ''}${num(r.deliveriesPerSec)} | ${ratio(r.deliveriesPerSec, floor?.deliveriesPerSec)} | ` +
      `${num(r.deliveriesPerCpuSecond)} | ${ratio(r.deliveriesPerCpuSecond, floor?.deliveriesPerCpuSecond)} | ` +
      `${r.p50Ms ?? '–'} | ${r.p99Ms ?? '–'} | ${num(r.fixedRatePerSec)} | ${r.cpuUsPerDelivery ?? '–'} | ` +
      `${r.rssPerConnKiB ?? '–'} | ${r.lost ?? '–'} | ${notes.join('; ')} |`)
  }
  lines.push('')
  const sse = sseAgainstWebsocket(rows)
  if (sse.length > 0) {
    lines.push('## Server-sent events against WebSocket, same app and layer', '')
    lines.push('| scenario | layer | CPU µs/delivery SSE / WebSocket | × | deliveries per server CPU-s SSE / WebSocket | × | RSS KiB/conn SSE / WebSocket |')
    lines.push('|---|---|--:|--:|--:|--:|--:|')
    for (const c of sse) {
      lines.push(`| ${c.scenario} | ${c.layer} | ${c.sse.cpuUsPerDelivery ?? '–'} / ${c.ws.cpuUsPerDelivery ?? '–'} | ${ratio(c.sse.cpuUsPerDelivery, c.ws.cpuUsPerDelivery)} | ` +
        `${num(c.sse.deliveriesPerCpuSecond)} / ${num(c.ws.deliveriesPerCpuSecond)} | ${ratio(c.sse.deliveriesPerCpuSecond, c.ws.deliveriesPerCpuSecond)} | ` +
        `${c.sse.rssPerConnKiB ?? '–'} / ${c.ws.rssPerConnKiB ?? '–'} |`)
    }
    lines.push('')
  }
  const checks = targetChecks(rows)
  if (checks.length > 0) {
    lines.push('## Against the targets (groups-100x100)', '')
    lines.push('| check | measured | target | met |', '|---|--:|--:|---|')
    for (const c of checks) lines.push(`| ${c.what} | ${c.measured} | ${c.target} | ${c.met === null ? 'n/a' : c.met ? 'yes' : '**no**'} |`)
    lines.push('')
  }
  lines.push('"max deliveries/s": highest delivered rate of a step the target kept up with (delivered ≥ 95% of offered, ' +
    'nothing lost), or of the saturation step when that is higher and lost nothing. "deliveries per server CPU-s": deliveries divided by the server processes\' CPU time in a step ' +
    'offered twice the floor\'s maximum (the cost of a delivery, independent of how much CPU the machine gave). ' +
    'p50/p99, CPU and "at deliveries/s": one fixed-rate step at half of the floor\'s maximum ' +
    '(ws-memory for in-process targets, ws-redis for Redis targets). CPU is the server processes\' user+system time ' +
    '(Redis not included). RSS is per idle connection. See bench/README.md.', '')
  return lines.join('\n')
}

export function targetChecks (rows) {
  const s = 'groups-100x100'
  const get = (t, scenario = s) => find(rows, scenario, t)
  const out = []
  // Efficiency is the floor's CPU per delivery over ours (deliveries per CPU-s, ours over the floor's).
  // `keptUp`: the highest rate kept up with (bounded latency). Against a floor whose figure is a
  // lower bound, the ratio is an upper bound: it can show a miss, not a pass.
  const ratioCheck = (a, b, min, scenario = s, fields = [['max', 'max deliveries/s'], ['keptUp', 'kept up with'], ['deliveriesPerCpuSecond', 'deliveries per server CPU-s']]) => {
    const ra = get(a, scenario)
    const rb = get(b, scenario)
    if (ra === undefined || rb === undefined) return
    for (const [field, label] of fields) {
      const [ours, floor] = field === 'max' ? [maxOf(ra).value, maxOf(rb).value] : field === 'keptUp' ? [ra.deliveriesPerSec, rb.deliveriesPerSec] : [ra[field], rb[field]]
      const upperBound = field === 'keptUp' && rb.maxIsLowerBound === true
      const value = ours != null && floor != null ? ours / floor : null
      const where = scenario === s ? '' : ` (${scenario})`
      const met = value === null || (upperBound && value >= min) ? null : value >= min
      out.push({ what: `${a} / ${b}, ${label}${where}`, measured: value === null ? '–' : `${upperBound ? '≤ ' : ''}${value.toFixed(2)}×`, target: `≥ ${min}×`, met })
    }
  }
  const perCpu = [['deliveriesPerCpuSecond', 'deliveries per server CPU-s']]
  for (const layer of ['memory', 'redis']) {
    ratioCheck(`channels-${layer}`, `ws-${layer}`, 0.85)
    ratioCheck(`channels-${layer}-shared`, `ws-${layer}`, 0.85)
    ratioCheck(`channels-${layer}-durable`, `ws-${layer}`, 0.85, s, perCpu)
    ratioCheck(`channels-${layer}`, `ws-${layer}`, 0.85, 'groups-100x100-1k', perCpu)
    ratioCheck(`channels-${layer}-shared`, `ws-${layer}`, 0.85, 'groups-100x100-1k', perCpu)
  }
  const cr = get('channels-redis')
  const wr = get('ws-redis')
  if (cr?.p99Ms != null && wr?.p99Ms != null) {
    const value = cr.p99Ms / wr.p99Ms
    out.push({ what: `channels-redis p99 at ${num(cr.fixedRatePerSec)}/s, against ws-redis' (${cr.p99Ms} / ${wr.p99Ms} ms)`, measured: `${value.toFixed(2)}×`, target: '≤ 2×', met: value <= 2 })
  }
  const cm = get('channels-memory')
  const wm = get('ws-memory')
  if (cm?.rssPerConnKiB != null && wm?.rssPerConnKiB != null) {
    const value = cm.rssPerConnKiB / wm.rssPerConnKiB
    out.push({ what: `channels-memory / ws-memory RSS per idle connection (${cm.rssPerConnKiB} / ${wm.rssPerConnKiB} KiB)`, measured: `${value.toFixed(2)}×`, target: '≤ 1.3×', met: value <= 1.3 })
  }
  let lost = 0
  let dups = 0
  let measured = 0
  for (const r of rows) {
    if (!r.target.startsWith('channels-') || r.error !== undefined) continue
    measured++
    lost += r.lost ?? 0
    dups += r.dups ?? 0
  }
  if (measured > 0) out.push({ what: `lost / duplicated, every channels row of every scenario (${measured} rows)`, measured: `${lost} / ${dups}`, target: '0 / 0', met: lost === 0 && dups === 0 })
  return out
}

/** channels-sse-X beside channels-X in each scenario where both were measured. */
export function sseAgainstWebsocket (rows) {
  const out = []
  for (const r of rows) {
    const m = /^channels-sse-(memory|redis)$/.exec(r.target)
    if (m === null || r.error !== undefined) continue
    const ws = find(rows, r.scenario, `channels-${m[1]}`)
    if (ws !== undefined) out.push({ scenario: r.scenario, layer: m[1], sse: r, ws })
  }
  return out
}

/**
 * The highest rate a target is known to deliver: the maximum of the stepped search, or the
 * saturation step's delivered rate when that is higher and nothing was lost or duplicated in it. A
 * floor whose generators ran out of CPU during the search (which then stops) often delivers more
 * in the saturation step, offered twice as much: that rate was delivered, so it bounds the maximum
 * from below. A lower bound when the step that gave it was generator-bound or kept up.
 */
export function maxOf (r) {
  const saturated = r.steps?.find(s => s.kind === 'saturate')
  if (saturated !== undefined && saturated.lost === 0 && saturated.dups === 0 && saturated.deliveredPerSec > (r.deliveriesPerSec ?? 0)) {
    return { value: Math.round(saturated.deliveredPerSec), lowerBound: saturated.generatorBound || saturated.keptUp, fromSaturation: true }
  }
  return { value: r.deliveriesPerSec, lowerBound: r.maxIsLowerBound, fromSaturation: false }
}

function find (rows, scenario, target) {
  return rows.find(r => r.scenario === scenario && r.target === target && r.error === undefined)
}

function ratio (a, b) {
  if (a == null || b == null || b === 0) return '–'
  return `${(a / b).toFixed(2)}`
}

function num (n) {
  return n == null ? '–' : Math.round(n).toLocaleString('en-US')
}

function escape (s) {
  return String(s).replaceAll('|', '\\|').replaceAll('\n', ' ')
}

/**
 * Where a step's p99 came from: how many windows of `windowMs` of send time hold a delivery slower
 * than it, out of the step's windows. A few: the tail is a spell (the host stalled the servers, or
 * a pause), and one such spell in a short step sets the p99; many: it is spread through the step,
 * as steady queueing spreads it. `sentAts[i]` is when the message of `latencies[i]` was due.
 */
export function p99Spread (sentAts, latencies, p99, windowMs = 100) {
  if (p99 == null || sentAts.length === 0) return { slowWindows: 0, windows: 0 }
  let first = Infinity
  let last = -Infinity
  for (const at of sentAts) {
    if (at < first) first = at
    if (at > last) last = at
  }
  const slow = new Set()
  for (let i = 0; i < sentAts.length; i++) if (latencies[i] > p99) slow.add(Math.floor((sentAts[i] - first) / windowMs))
  return { slowWindows: slow.size, windows: Math.floor((last - first) / windowMs) + 1 }
}

/**
 * A tail from a spell: the deliveries over the p99 fell in a tenth of the step's windows or fewer,
 * in a step that kept up (overloaded, latency grows to the end, and the slowest are the last).
 */
export function tailFromSpell ({ p99Windows, windows, fixedKeptUp }) {
  return fixedKeptUp !== false && windows >= 10 && p99Windows > 0 && p99Windows * 10 <= windows
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dir = process.argv[2] ?? path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'results')
  const rows = JSON.parse(readFileSync(path.join(dir, 'latest.json'), 'utf8'))
  const meta = JSON.parse(readFileSync(path.join(dir, 'latest-meta.json'), 'utf8'))
  writeFileSync(path.join(dir, 'latest.md'), renderMarkdown(rows, meta))
  console.log(`rendered ${path.join(dir, 'latest.md')}`)
}
