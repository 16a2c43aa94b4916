// The benchmark harness works end to end: it starts a server and a load generator per target,
// produces a row for each target and loses nothing. Never a timed assertion: CI machines are shared.
import t from 'tap'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { root, smokeRun, type Row } from '../helpers/bench-smoke.js'

t.test('bench --smoke produces a row per target with nothing lost', async t => {
  t.ok(existsSync(path.join(root, 'dist', 'index.js')), 'dist/ is built (npm test builds it first)')
  const out = mkdtempSync(path.join(tmpdir(), 'bench-smoke-'))
  t.teardown(() => rmSync(out, { recursive: true, force: true }))
  const { code, output } = await smokeRun('run.js', [`--out=${out}`])
  t.equal(code, 0, output)
  const rows = JSON.parse(readFileSync(path.join(out, 'latest.json'), 'utf8')) as Row[]
  t.same(rows.map(r => r.target), ['ws-memory', 'channels-memory', 'channels-sse-memory'], 'the floor, and this package to WebSocket and to event-stream clients')
  for (const row of rows) {
    t.equal(row.error, undefined, `${row.target}: no error`)
    t.equal(row.lost, 0, `${row.target}: nothing lost`)
    t.equal(row.dups, 0, `${row.target}: no duplicates`)
    t.ok(row.steps.some(s => s.frames > 0), `${row.target}: frames delivered`)
    const fixed = row.steps.find(s => s.kind === 'fixed')
    t.ok(fixed !== undefined && fixed.samples > 0 && fixed.windows >= 1 && fixed.p99Windows <= fixed.windows,
      `${row.target}: the fixed step says in how many of its 100-ms windows the deliveries over its p99 fell`)
  }
  t.ok(existsSync(path.join(out, 'latest.md')), 'Markdown table written')

  // A full run reads the servers' core before and after each target (--smoke does not): a row
  // around which the core read slow is noted, so a host that slowed mid-run is seen in the table.
  const { pathToFileURL } = await import('node:url')
  const { renderMarkdown, slowestCore, SLOW_CORE, keptAttempt } = await import(pathToFileURL(path.join(root, 'bench', 'lib', 'report.js')).href) as {
    renderMarkdown: (rows: object[], meta: object) => string
    slowestCore: (row: object, fastest: number) => number
    SLOW_CORE: number
    keptAttempt: (kept: object | undefined, row: object, fastest: number) => object
  }
  const meta = JSON.parse(readFileSync(path.join(out, 'latest-meta.json'), 'utf8')) as object
  const timed = rows.map(r => ({ ...r, cpu0Speed: 1_200_000, cpu0SpeedAfter: r.target === 'channels-memory' ? 696_000 : 1_200_000 }))
  const table = renderMarkdown(timed, meta)
  t.match(table, /fixed task .*: 0\.58–1\.00/, 'the range of the core\'s readings, against the fastest')
  const noted = table.split('\n').filter(line => line.includes('core at 0.58 of the run\'s fastest'))
  t.same(noted.map(line => line.split(' | ')[1]), ['channels-memory'], 'only the row the slow reading came with is noted')
  t.notMatch(renderMarkdown(rows, meta), /fixed task/, 'a run without readings says nothing of them')

  // A target around which the core read slow is measured again (bench/run.js, --retry-slow): by
  // its slowest reading against the fastest so far; the row kept says how often it was measured.
  t.equal(slowestCore({ cpu0Speed: 1_200_000, cpu0SpeedAfter: 696_000 }, 1_200_000), 0.58, 'the slower of the two readings counts')
  t.ok(slowestCore({ cpu0Speed: 1_200_000, cpu0SpeedAfter: 696_000 }, 1_200_000) < SLOW_CORE, 'and is slow enough to measure again')
  t.equal(slowestCore({ cpu0Speed: 1_150_000 }, 1_200_000) >= SLOW_CORE, true, 'a reading within the threshold is not')
  t.equal(slowestCore({}, 1_200_000), 1, 'a row without readings (--smoke) never is')
  const slow = { cpu0Speed: 700_000, cpu0SpeedAfter: 1_200_000 }
  const steady = { cpu0Speed: 1_150_000, cpu0SpeedAfter: 1_180_000 }
  const failed = { cpu0Speed: 1_200_000, cpu0SpeedAfter: 1_200_000, error: 'server did not start' }
  t.equal(keptAttempt(undefined, slow, 1_200_000), slow, 'the first attempt is kept until another is steadier')
  t.equal(keptAttempt(slow, steady, 1_200_000), steady, 'a steadier attempt replaces it')
  t.equal(keptAttempt(steady, slow, 1_200_000), steady, 'a slower one does not')
  t.equal(keptAttempt(slow, failed, 1_200_000), slow, 'nor does a failed one, however steady the core around it')
  t.equal(keptAttempt(failed, slow, 1_200_000), slow, 'a measured attempt replaces a failed one')
  const retried = renderMarkdown(timed.map(r => r.target === 'ws-memory' ? { ...r, coreRetries: 2 } : r), meta)
  t.same(retried.split('\n').filter(line => line.includes('measured 3 times (core slow), the steadiest kept')).map(line => line.split(' | ')[1]),
    ['ws-memory'], 'a row measured again says so')
})

t.test('where a step\'s p99 came from: a spell of a few windows, or spread through the step', async t => {
  const { pathToFileURL } = await import('node:url')
  const { p99Spread, tailFromSpell, renderMarkdown } = await import(pathToFileURL(path.join(root, 'bench', 'lib', 'report.js')).href) as {
    p99Spread: (sentAts: number[], latencies: number[], p99: number | null, windowMs?: number) => { slowWindows: number, windows: number }
    tailFromSpell: (row: { p99Windows: number, windows: number, fixedKeptUp?: boolean }) => boolean
    renderMarkdown: (rows: object[], meta: object) => string
  }
  // 5 s of deliveries, one every 5 ms, at 2 ms; 20 of them at 40 ms.
  const sentAts = Array.from({ length: 1000 }, (_, i) => 1_000 + i * 5)
  const spell = sentAts.map((_, i) => i >= 600 && i < 620 ? 40 : 2) // 100 ms in a row
  const spread = sentAts.map((_, i) => i % 50 === 7 ? 40 : 2) // one every 250 ms
  t.same(p99Spread(sentAts, spell, 2), { slowWindows: 1, windows: 50 }, 'a spell: the slow ones in one window of 50')
  t.same(p99Spread(sentAts, spread, 2), { slowWindows: 20, windows: 50 }, 'spread: in 20 windows')
  t.same(p99Spread([], [], null), { slowWindows: 0, windows: 0 }, 'no sample, no window')
  t.equal(tailFromSpell({ p99Windows: 1, windows: 50 }), true)
  t.equal(tailFromSpell({ p99Windows: 20, windows: 50 }), false)
  t.equal(tailFromSpell({ p99Windows: 1, windows: 5 }), false, 'a step of less than a second says nothing either way')
  t.equal(tailFromSpell({ p99Windows: 3, windows: 100, fixedKeptUp: false }), false, 'nor an overloaded one, whose slowest deliveries are its last')
  const meta = { mode: 'smoke', command: 'node bench/run.js --smoke', started: '', machine: { versions: {} } }
  const row = { scenario: 'smoke', target: 'ws-memory', steps: [], p99Ms: 40, p99Windows: 1, windows: 50 }
  t.match(renderMarkdown([row], meta), /p99 from a spell: its slow deliveries fell in 1 of 50 windows of 100 ms/, 'the table notes it')
  t.notMatch(renderMarkdown([{ ...row, p99Windows: 20 }], meta), /p99 from a spell/, 'and says nothing of a spread tail')
})

t.test('the table\'s maximum: the searched one, or the saturation step\'s when that delivered more and lost nothing', async t => {
  const { pathToFileURL } = await import('node:url')
  type Max = { value: number | null, lowerBound: boolean, fromSaturation: boolean }
  const { maxOf } = await import(pathToFileURL(path.join(root, 'bench', 'lib', 'report.js')).href) as { maxOf: (row: object) => Max }
  const saturate = (deliveredPerSec: number, more: object = {}): object => ({ kind: 'saturate', deliveredPerSec, lost: 0, dups: 0, generatorBound: false, keptUp: false, ...more })
  const row = (steps: object[], searched = 80_000, maxIsLowerBound = true): object => ({ deliveriesPerSec: searched, maxIsLowerBound, steps })
  t.same(maxOf(row([saturate(146_000, { generatorBound: true })])), { value: 146_000, lowerBound: true, fromSaturation: true },
    'a floor whose generators ran out in the search: what it delivered saturated, still a lower bound')
  t.same(maxOf(row([saturate(143_000)], 134_000, false)), { value: 143_000, lowerBound: false, fromSaturation: true },
    'the server was the limit in the saturation step: its maximum')
  t.same(maxOf(row([saturate(150_000, { lost: 3 })])), { value: 80_000, lowerBound: true, fromSaturation: false }, 'a step that lost messages does not count')
  t.same(maxOf(row([saturate(150_000, { dups: 1 })])), { value: 80_000, lowerBound: true, fromSaturation: false }, 'nor one with duplicates')
  t.same(maxOf(row([saturate(79_000)], 87_000, false)), { value: 87_000, lowerBound: false, fromSaturation: false }, 'the search found more: it stands')
  t.same(maxOf({ deliveriesPerSec: 5_000, maxIsLowerBound: false, steps: [] }), { value: 5_000, lowerBound: false, fromSaturation: false }, 'no saturation step (--smoke)')

  const { targetChecks } = await import(pathToFileURL(path.join(root, 'bench', 'lib', 'report.js')).href) as { targetChecks: (rows: object[]) => Array<{ what: string, measured: string, met: boolean | null }> }
  const scenario = 'groups-100x100'
  const checks = targetChecks([
    { scenario, target: 'ws-memory', deliveriesPerCpuSecond: 150_000, ...row([saturate(146_000, { generatorBound: true })]) },
    { scenario, target: 'channels-memory', deliveriesPerCpuSecond: 79_000, ...row([saturate(79_000)], 87_000, false) }
  ])
  t.same(checks.slice(0, 3).map(c => [c.what, c.measured, c.met]), [
    ['channels-memory / ws-memory, max deliveries/s', '0.60×', false],
    ['channels-memory / ws-memory, kept up with', '≤ 1.09×', null],
    ['channels-memory / ws-memory, deliveries per server CPU-s', '0.53×', false]
  ], 'the targets\' check compares maxima read the same way, and names the two targets; a rate kept up with against a floor that only has a lower bound decides nothing')
})
