// The fuzz of "nothing lost" works end to end: servers, clients, faults, and a checker that passes.
import t from 'tap'
import { benchRun } from '../helpers/bench-smoke.js'

// Seed 2 over 20 s: a cut-off of one process, a SIGKILLed server, a Redis restarted empty.
t.test('bench/fuzz.js: a short run with faults finds every acknowledged message delivered once, in order', async t => {
  const { code, output } = await benchRun('fuzz.js', ['--seed=2', '--fault=all', '--seconds=20', '--port=0'])
  t.equal(code, 0, output)
  const summary = JSON.parse(output.trim().split('\n').pop() ?? '{}') as Record<string, unknown>
  t.match(summary, { ok: true, violations: 0, lost: 0, duplicated: 0, outOfOrder: 0, unexpectedGaps: 0, presence: { ok: true } })
  t.ok(Number(summary.acknowledged) > 0 && Number(summary.delivered) >= Number(summary.acknowledged), `messages went through (${String(summary.acknowledged)} acknowledged, ${String(summary.delivered)} delivered)`)
  t.ok(Object.keys(summary.faults as object).length > 0, `faults were injected (${JSON.stringify(summary.faults)})`)
})
