// Where a delivery's instructions went, by function: the instructions each function ran itself
// (not those of what it called) in a dump kept by `bench/instructions.js --keep=<dir>`.
//
//   node bench/instructions-report.js <dir>/<target>/callgrind.<pid>.2 [--top=40] [--deliveries=N]
//
// callgrind names V8's builtins and Node's C++ by their symbols, but knows the JavaScript that V8
// compiled only by address. `--keep` runs the server with `--perf-basic-prof`, for which V8 writes
// each compiled function's address range to /tmp/perf-<pid>.map: this report reads it to name
// them (`JS:*sameData file:///…/copy-encoding.js:89:18`; `*` is optimised code). A function V8
// inlined into another is counted in the one it was inlined into. With `--deliveries`, each line
// also reads per delivery.
import { readFileSync } from 'node:fs'
import { basename } from 'node:path'
import { parseFlags } from './lib/common.js'

const args = process.argv.slice(2)
const opts = parseFlags(args.filter(a => a.startsWith('--')), ['top', 'deliveries'], import.meta.url)
const dump = args.find(a => !a.startsWith('--'))
if (dump === undefined) {
  process.stderr.write('usage: node bench/instructions-report.js <callgrind dump> [--top=40] [--deliveries=N]\n')
  process.exit(2)
}
const top = Number(opts.top ?? 40)
const deliveries = opts.deliveries === undefined ? undefined : Number(opts.deliveries)

const pid = /^callgrind\.(\d+)/.exec(basename(dump))?.[1]
const ranges = compiledCode(`/tmp/perf-${pid}.map`)
const byName = new Map()
for (const [name, count] of selfCounts(readFileSync(dump, 'utf8'))) {
  const address = /^0x([0-9a-f]+)(?:'\d+)?$/.exec(name)
  const shown = address === null ? name : `JS ${codeAt(ranges, parseInt(address[1], 16)) ?? `(unnamed) ${name}`}`
  byName.set(shown, (byName.get(shown) ?? 0) + count)
}
const total = [...byName.values()].reduce((a, b) => a + b, 0)
for (const [name, count] of [...byName].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  const each = deliveries === undefined ? '' : ` ${(count / deliveries).toFixed(0).padStart(6)} per delivery`
  console.log(`${count.toLocaleString('en').padStart(14)} ${(count / total * 100).toFixed(1).padStart(5)}%${each}  ${name.slice(0, 150)}`)
}
console.log(`${total.toLocaleString('en').padStart(14)} in all`)

/**
 * Each function's own instructions in a callgrind dump (format: `fn=(id) name` opens a function;
 * a cost line is `<position> <Ir>`; the cost line right after `calls=` is what that call ran,
 * counted in the callee's own lines, not the caller's).
 */
function selfCounts (text) {
  const names = new Map()
  const counts = new Map()
  let current
  let afterCalls = false
  for (const line of text.split('\n')) {
    const fn = /^(c?fn)=\((\d+)\)(?: (.*))?$/.exec(line)
    if (fn !== null) {
      if (fn[3] !== undefined) names.set(fn[2], fn[3])
      if (fn[1] === 'fn') {
        current = fn[2]
        afterCalls = false
      }
      continue
    }
    if (line.startsWith('calls=')) {
      afterCalls = true
      continue
    }
    const cost = /^[+\-*\d]\S*\s+(\d+)/.exec(line)
    if (cost === null) continue
    if (afterCalls) afterCalls = false
    else counts.set(current, (counts.get(current) ?? 0) + Number(cost[1]))
  }
  return [...counts].map(([id, count]) => [names.get(id) ?? id, count])
}

/** V8's map of compiled code: [start, end, name], sorted; a later entry for the same address wins. */
function compiledCode (path) {
  let text = ''
  try {
    text = readFileSync(path, 'utf8')
  } catch {
    process.stderr.write(`${path} not found: compiled JavaScript stays unnamed (was the dump kept with --keep?)\n`)
  }
  const ranges = []
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]+) ([0-9a-f]+) (.*)$/.exec(line)
    if (m !== null) ranges.push([parseInt(m[1], 16), parseInt(m[1], 16) + parseInt(m[2], 16), m[3], ranges.length])
  }
  return ranges.sort((a, b) => a[0] - b[0] || a[3] - b[3])
}

function codeAt (ranges, address) {
  let lo = 0
  let hi = ranges.length - 1
  let found
  while (lo <= hi) {
    const mid = (lo + hi) >> 1
    if (ranges[mid][0] <= address) {
      found = mid
      lo = mid + 1
    } else {
      hi = mid - 1
    }
  }
  // The last range starting at or before the address that holds it (code moved or freed leaves
  // older entries behind; the latest written is the live one).
  let best
  for (let i = found; i !== undefined && i >= 0 && i > found - 64; i--) {
    const [start, end, name, order] = ranges[i]
    if (start <= address && address < end && (best === undefined || order > best.order)) best = { name, order }
  }
  return best?.name
}
