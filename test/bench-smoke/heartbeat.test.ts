// The heartbeat bench works end to end: both servers ping every connection and every connection
// stays open (the script fails otherwise). No timed assertion.
import t from 'tap'
import { smokeRun } from '../helpers/bench-smoke.js'

t.test('the heartbeat bench --smoke measures a ping and its pong on both servers', async t => {
  const { code, output } = await smokeRun('heartbeat.js')
  t.equal(code, 0, output)
  for (const target of ['ws', 'channels']) {
    t.match(output, new RegExp(`round 1 ${target}: user [\\d.]+ \\+ sys [\\d.]+ = [\\d.]+ µs per ping and pong \\(\\d+% of the pings due in a second answered\\)`), `${target}: a round`)
    t.match(output, new RegExp(`\\| ${target} \\| [\\d.]+ \\| [\\d.]+ \\| [\\d.]+ \\| [\\d.]+ \\| [\\d.]+ \\|`), `${target}: a row of the table`)
  }
})
