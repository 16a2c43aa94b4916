// A mistyped flag must not start a bench run (the full one takes an hour): every bench script
// stops at once, names the flags it knows, and prints its usage on --help.
import t from 'tap'
import { benchRun } from '../helpers/bench-smoke.js'

const scripts: Array<[string, string]> = [
  ['run.js', '--fixed-rate'],
  ['cpu-split.js', '--rate'],
  ['membership-renewal.js', '--members'],
  ['abuse.js', '--seconds'],
  ['client-bench.js', '--clients'],
  ['rolling-restart.js', '--clients'],
  ['heartbeat.js', '--interval'],
  ['memory-margin.js', '--connections'],
  ['group-send.js', '--sends'],
  ['instructions.js', '--messages'],
  ['instructions-report.js', '--deliveries'],
  ['fuzz.js', '--fault']
]

for (const [script, aFlag] of scripts) {
  t.test(`${script}: an unknown flag stops it before it measures anything`, async t => {
    const { code, output } = await benchRun(script, ['--fixed_rate=1'])
    t.equal(code, 2, 'exit code 2')
    t.match(output, '--fixed_rate=1: not a flag of this script', 'names the flag it refused')
    t.match(output, aFlag, 'and lists the flags it knows')
  })

  t.test(`${script} --help prints its usage`, async t => {
    const { code, output } = await benchRun(script, ['--help'])
    t.equal(code, 0, 'exit code 0')
    t.match(output, `bench/${script}`, 'the usage shows how to run it')
    t.notMatch(output, /^\/\//m, 'as text, not as comment lines')
  })
}
