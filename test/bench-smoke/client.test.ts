// The client bench works end to end (size, round trips, a reconnect storm). No timed assertion.
import t from 'tap'
import { smokeRun } from '../helpers/bench-smoke.js'

t.test('the client bench --smoke measures size, round trips and a reconnect storm', async t => {
  const { code, output } = await smokeRun('client-bench.js')
  t.equal(code, 0, output)
  t.match(output, /bundle: \d+ B minified, \d+ B gzipped/)
  t.match(output, /call\(\) round trip over 200 sequential calls: p50 [\d.]+ ms.*raw ws echo: p50 [\d.]+ ms/)
  t.match(output, /reconnect storm, 50 clients: .* 50 connections at the end/)
  t.match(output, /client bench ok/)
})
