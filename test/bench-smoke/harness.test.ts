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
  }
  t.ok(existsSync(path.join(out, 'latest.md')), 'Markdown table written')
})
