// The abuse bench works end to end: a witness client measured alone and under each abuse.
import t from 'tap'
import { smokeRun } from '../helpers/bench-smoke.js'

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
