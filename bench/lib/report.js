// Renders bench/results/latest.md from the rows of latest.json.

const COUNTERPART = {
  'channels-memory': { floor: 'ws-memory', rival: 'socketio-memory' },
  'channels-redis': { floor: 'ws-redis', rival: 'socketio-redis' },
  'channels-sse-memory': { floor: 'ws-memory' },
  'channels-sse-redis': { floor: 'ws-redis' },
  'socketio-memory': { floor: 'ws-memory' },
  'socketio-redis': { floor: 'ws-redis' }
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
  const avail = rows.map(r => r.cpu0Available).filter(a => typeof a === 'number')
  if (avail.length > 0) {
    lines.push(`CPU available to a busy process on the servers' core, measured before each target: ${Math.min(...avail).toFixed(2)}–${Math.max(...avail).toFixed(2)} ` +
      '(1.00 = an idle machine; lower means other jobs or the host took the rest, and every number below is that much worse).', '')
  }
  lines.push('| scenario | target | conns | groups | payload B | max deliveries/s | × floor | deliveries per server CPU-s | × floor | p50 ms | p99 ms | at deliveries/s | CPU µs/delivery | RSS KiB/conn | lost | notes |')
  lines.push('|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|')
  for (const r of rows) {
    if (r.error !== undefined) {
      lines.push(`| ${r.scenario} | ${r.target} | ${r.connections} | ${r.groups} | ${r.payloadBytes} | – | – | – | – | – | – | – | – | – | – | ${r.unavailable ? 'not available: ' : 'error: '}${escape(r.error)} |`)
      continue
    }
    const floorName = r.target === 'ws-memory' || r.target === 'ws-redis' ? r.target : COUNTERPART[r.target.replace(/-alt\d+$/, '')]?.floor
    const floor = find(rows, r.scenario, floorName)
    const notes = []
    if (r.maxIsLowerBound) notes.push('max is a lower bound (generator-bound or never saturated)')
    if (r.starved) notes.push('search ended by a step where the servers were starved of CPU by other jobs')
    if (r.fixedKeptUp === false) notes.push('overloaded at the fixed rate')
    if (r.repeats !== undefined) notes.push(`median of ${r.repeats.length}: ${r.repeats.map(x => num(x.deliveriesPerSec ?? x.deliveriesPerCpuSecond)).join(' / ')}`)
    if (r.redisCpuUsPerDelivery !== undefined) notes.push(`+${r.redisCpuUsPerDelivery} µs Redis CPU/delivery`)
    if (r.lostWhenOverloaded > 0) notes.push(`${r.lostWhenOverloaded} lost past saturation`)
    if (r.dups > 0) notes.push(`${r.dups} duplicates`)
    if (r.groupSendSkipped > 0) notes.push(`groupSend skipped ${r.groupSendSkipped}`)
    lines.push(`| ${r.scenario} | ${r.target} | ${r.connections} | ${r.groups} | ${r.payloadBytes} | ` +
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
    'nothing lost). "deliveries per server CPU-s": deliveries divided by the server processes\' CPU time in a step ' +
    'offered twice the floor\'s maximum (the cost of a delivery, independent of how much CPU the machine gave). ' +
    'p50/p99, CPU and "at deliveries/s": one fixed-rate step at half of the floor\'s maximum ' +
    '(ws-memory for in-process targets, ws-redis for Redis targets). CPU is the server processes\' user+system time ' +
    '(Redis not included). RSS is per idle connection. See bench/README.md.', '')
  return lines.join('\n')
}

export function targetChecks (rows) {
  const s = 'groups-100x100'
  const get = t => find(rows, s, t)
  const out = []
  const ratioCheck = (a, b, min) => {
    const ra = get(a)
    const rb = get(b)
    if (ra === undefined || rb === undefined) return
    for (const [field, label] of [['deliveriesPerSec', 'max deliveries/s'], ['deliveriesPerCpuSecond', 'deliveries per server CPU-s']]) {
      const value = ra[field] != null && rb[field] != null ? ra[field] / rb[field] : null
      out.push({ what: `${a} / ${b}, ${label}`, measured: value === null ? '–' : `${value.toFixed(2)}×`, target: `≥ ${min}×`, met: value === null ? null : value >= min })
    }
  }
  ratioCheck('channels-memory', 'ws-memory', 0.8)
  ratioCheck('channels-memory', 'socketio-memory', 1.5)
  ratioCheck('channels-redis', 'ws-redis', 0.8)
  ratioCheck('channels-redis', 'socketio-redis', 1.5)
  const cm = get('channels-memory')
  const wm = get('ws-memory')
  if (cm?.p99Ms !== undefined && cm.error === undefined) {
    out.push({ what: `channels-memory p99 at ${num(cm.fixedRatePerSec)}/s`, measured: `${cm.p99Ms} ms`, target: '≤ 5 ms', met: cm.p99Ms === null ? null : cm.p99Ms <= 5 })
  }
  const cr = get('channels-redis')
  if (cr?.p99Ms !== undefined && cr.error === undefined) {
    out.push({ what: `channels-redis p99 at ${num(cr.fixedRatePerSec)}/s`, measured: `${cr.p99Ms} ms`, target: '≤ 5 ms', met: cr.p99Ms === null ? null : cr.p99Ms <= 5 })
  }
  if (cm?.rssPerConnKiB != null && wm?.rssPerConnKiB != null) {
    const value = cm.rssPerConnKiB / wm.rssPerConnKiB
    out.push({ what: 'channels-memory / ws-memory RSS per idle connection', measured: `${value.toFixed(2)}×`, target: '≤ 1.3×', met: value <= 1.3 })
  }
  for (const t of ['channels-memory', 'channels-redis']) {
    const r = get(t)
    if (r !== undefined && r.error === undefined) out.push({ what: `${t} lost messages`, measured: String(r.lost), target: '0', met: r.lost === 0 })
  }
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
