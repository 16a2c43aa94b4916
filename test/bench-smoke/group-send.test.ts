// The group-send bench works end to end against Redis: every send of each target is answered
// (a failed one ends the script with an error), and each gets its row. No timed assertion.
import t from 'tap'
import { smokeRun } from '../helpers/bench-smoke.js'

t.test('the group-send bench --smoke measures raw ioredis and groupSend', async t => {
  const { code, output } = await smokeRun('group-send.js')
  t.equal(code, 0, output)
  for (const target of ['raw ioredis PUBLISH', 'groupSend, this build']) {
    t.match(output, `${target}: `, `${target}: a row`)
    t.match(output, new RegExp(`${target}: [\\d.]+ µs of CPU per send \\([\\d.]+× raw; rounds: [\\d.]+\\)`), `${target}: a figure`)
  }
})
