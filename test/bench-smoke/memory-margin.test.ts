// The memory-margin bench works end to end: each target's server holds both batches of
// connections (the script fails otherwise) and a table row comes out per batch. No timed or
// sized assertion: the figures are the bench's to report.
import t from 'tap'
import { benchRun } from '../helpers/bench-smoke.js'

t.test('the memory-margin bench measures two batches of connections per target', async t => {
  const targets = ['ws-memory', 'channels-memory', 'channels-redis']
  const { code, output } = await benchRun('memory-margin.js', [`--targets=${targets.join(',')}`, '--connections=40', '--groups=4'])
  t.equal(code, 0, output)
  for (const target of targets) {
    t.match(output, new RegExp(`\\| ${target} \\| first \\| 40 \\| -?[\\d.]+ \\| -?[\\d.]+ \\| -?[\\d.]+ \\|`), `${target}: the first batch`)
    t.match(output, new RegExp(`\\| ${target} \\| second \\| 80 \\| -?[\\d.]+ \\| -?[\\d.]+ \\| -?[\\d.]+ \\|`), `${target}: the second batch`)
  }
})

t.test('a target whose server cannot start stops the bench with its name', async t => {
  const { code, output } = await benchRun('memory-margin.js', ['--targets=nope-memory', '--connections=10'])
  t.equal(code, 1, output)
  t.match(output, 'nope-memory: its server exited (code 1) before it listened')
})
