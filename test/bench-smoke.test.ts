// The benchmark harness works end to end: it starts a server and a load generator per target,
// produces a row for each target and loses nothing. Never a timed assertion: CI machines are shared.
import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

interface Row { target: string, lost: number | null, dups: number, error?: string, steps: Array<{ frames: number }> }

t.test('bench --smoke produces a row per target with nothing lost', async t => {
  t.ok(existsSync(path.join(root, 'dist', 'index.js')), 'dist/ is built (npm test builds it first)')
  const out = mkdtempSync(path.join(tmpdir(), 'bench-smoke-'))
  t.teardown(() => rmSync(out, { recursive: true, force: true }))
  const { code, output } = await new Promise<{ code: number | null, output: string }>(resolve => {
    execFile(process.execPath, [path.join(root, 'bench', 'run.js'), '--smoke', `--out=${out}`], {
      cwd: root,
      timeout: 90_000,
      // The bench processes are not under test: keep tap's coverage instrumentation out of them.
      env: { ...process.env, _TAPJS_PROCESSINFO_COVERAGE_: '0' }
    },
      (err, stdout, stderr) => resolve({ code: err === null ? 0 : (err as { code?: number }).code ?? null, output: stdout + stderr }))
  })
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

t.test('the client bench --smoke measures size, round trips and a reconnect storm', async t => {
  const { code, output } = await new Promise<{ code: number | null, output: string }>(resolve => {
    execFile(process.execPath, [path.join(root, 'bench', 'client-bench.js'), '--smoke'], {
      cwd: root,
      timeout: 90_000,
      env: { ...process.env, _TAPJS_PROCESSINFO_COVERAGE_: '0' }
    }, (err, stdout, stderr) => resolve({ code: err === null ? 0 : (err as { code?: number }).code ?? null, output: stdout + stderr }))
  })
  t.equal(code, 0, output)
  t.match(output, /bundle: \d+ B minified, \d+ B gzipped/)
  t.match(output, /call\(\) round trip over 200 sequential calls: p50 [\d.]+ ms.*raw ws echo: p50 [\d.]+ ms/)
  t.match(output, /reconnect storm, 50 clients: .* 50 connections at the end/)
  t.match(output, /client bench ok/)
})
