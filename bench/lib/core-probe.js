// The servers' core, read while a target runs. The checks before and after each target (run.js,
// coreCheck) miss the slow spells this host has in the middle of one: seconds to minutes at about
// half its speed. The probe does a small fixed piece of work (the same JSON round trips as
// coreCheck) four times a second on that core, at the lowest priority the scheduler has
// (SCHED_IDLE: it runs only when the core would otherwise be idle, and gives way at once), and
// times it in its own CPU time. A host that slows the core makes the same work take more of it,
// whatever the servers do. Their load beside it lowers its readings by 10–20% (SLOW_DURING in
// report.js). About 2 ms of work each 250 ms: 0.7% of an idle core.

import { spawn, spawnSync } from 'node:child_process'
import { monoMs } from './common.js'

const CODE = 'const o={type:"bench.message",seq:1,text:"x".repeat(100)};' +
  'setInterval(()=>{const c=process.cpuUsage();for(let i=0;i<2000;i++)JSON.parse(JSON.stringify(o));' +
  'const u=process.cpuUsage(c);process.stdout.write(Math.round(2e9/(u.user+u.system))+"\\n")},250)'

/** Whether a probe can run: pinned, with `chrt` (util-linux) to give it the idle priority. */
export function canProbe (pin) {
  return pin && spawnSync('chrt', ['--idle', '0', 'true'], { stdio: 'ignore' }).status === 0
}

/**
 * Starts the probe on `cpu`. Its readings are JSON round trips per second of its CPU time, the
 * unit of coreCheck's `cpu0Speed`, each stamped with `monoMs()` on arrival.
 */
export function startCoreProbe (cpu) {
  const child = spawn('taskset', ['-c', String(cpu), 'chrt', '--idle', '0', process.execPath, '-e', CODE], { stdio: ['ignore', 'pipe', 'ignore'] })
  const readings = []
  let rest = ''
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', chunk => {
    const lines = (rest + chunk).split('\n')
    rest = lines.pop()
    const at = monoMs()
    for (const line of lines) if (line !== '') readings.push({ at, speed: Number(line) })
  })
  child.on('error', () => {}) // no probe: the target is judged by the checks around it only
  return {
    /** The first quarter of the readings between `from` and `to` (monoMs), or undefined with fewer than MIN_READINGS. */
    lowQuarter (from, to) {
      const speeds = readings.filter(r => r.at >= from && r.at <= to).map(r => r.speed).sort((a, b) => a - b)
      return speeds.length < MIN_READINGS ? undefined : speeds[Math.floor(speeds.length / 4)]
    },
    stop () {
      child.kill()
    }
  }
}

// A step shorter than 2 s, or one during which the servers kept the core busy (the probe then
// gets no turn), says nothing about the host.
const MIN_READINGS = 8
