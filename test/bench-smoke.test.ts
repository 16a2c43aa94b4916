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

/** Runs a bench script with --smoke; resolves with its exit code and output. */
function smokeRun (script: string, extra: string[] = []): Promise<{ code: number | null, output: string }> {
  return new Promise(resolve => {
    execFile(process.execPath, [path.join(root, 'bench', script), '--smoke', ...extra], {
      cwd: root,
      timeout: 90_000,
      // The bench processes are not under test: keep tap's coverage instrumentation out of them.
      env: { ...process.env, _TAPJS_PROCESSINFO_COVERAGE_: '0' }
    }, (err, stdout, stderr) => resolve({ code: err === null ? 0 : (err as { code?: number }).code ?? null, output: stdout + stderr }))
  })
}

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

t.test('the client bench --smoke measures size, round trips and a reconnect storm', async t => {
  const { code, output } = await smokeRun('client-bench.js')
  t.equal(code, 0, output)
  t.match(output, /bundle: \d+ B minified, \d+ B gzipped/)
  t.match(output, /call\(\) round trip over 200 sequential calls: p50 [\d.]+ ms.*raw ws echo: p50 [\d.]+ ms/)
  t.match(output, /reconnect storm, 50 clients: .* 50 connections at the end/)
  t.match(output, /client bench ok/)
})

t.test('the abuse bench --smoke measures the witness alone and under each abuse', async t => {
  const { code, output } = await smokeRun('abuse.js')
  t.equal(code, 0, output)
  for (const phase of ['alone', 'frame flood (rateLimit on)', 'a client never reads', 'handshake flood', 'alone again']) {
    const name = phase.replace(/[()]/g, '\\$&')
    t.match(output, new RegExp(`^${name} +witness p50 [\\d.]+ ms, p99 [\\d.]+ ms.* 0 failed`, 'm'), phase)
  }
  t.match(output, /a client never reads .*closed \{"1008 slow reader":\d+\}/, 'the client that never reads is closed with 1008')
  t.match(output, /handshake flood .*"429":\d+/, 'the handshake flood gets 429s')
  t.match(output, /abuse bench ok/)
})

t.test('the rolling restart bench --smoke counts deliveries across a deploy behind nginx', async t => {
  const { code, output } = await smokeRun('rolling-restart.js')
  t.equal(code, 0, output)
  t.match(output, /rolling restart, 20 clients, 50 messages\/s: sent \d+; delivered per client \d+–\d+; lost 0, duplicated 0, out of order 0, gap\(\) 0/)
  t.match(output, /rolling restart bench ok/)
})
