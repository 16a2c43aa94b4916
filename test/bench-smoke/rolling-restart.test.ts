// The rolling restart bench works end to end behind nginx, counting every delivery.
import t from 'tap'
import { smokeRun } from '../helpers/bench-smoke.js'

t.test('the rolling restart bench --smoke counts deliveries across a deploy behind nginx', async t => {
  const { code, output } = await smokeRun('rolling-restart.js')
  t.equal(code, 0, output)
  t.match(output, /rolling restart, 20 clients, 50 messages\/s: sent \d+; delivered per client \d+–\d+; lost 0, duplicated 0, out of order 0, gap\(\) 0/)
  t.match(output, /rolling restart bench ok/)
})
