#!/usr/bin/env node
// Summarises a V8 .cpuprofile (from `npm run bench -- --profile`, written by `node --cpu-prof`):
// self time by function and by package/file, so hot spots can be compared between targets.
//   node bench/profile-summary.js bench/results/partial/profiles/groups-100x100.channels-memory.0.cpuprofile [--top=40]
import { readFileSync } from 'node:fs'
import path from 'node:path'

const file = process.argv[2]
if (file === undefined) {
  process.stderr.write('usage: node bench/profile-summary.js <file.cpuprofile> [--top=N]\n')
  process.exit(2)
}
const top = Number(/--top=(\d+)/.exec(process.argv.join(' '))?.[1] ?? 40)
const profile = JSON.parse(readFileSync(file, 'utf8'))
const nodes = new Map(profile.nodes.map(n => [n.id, n]))

// Sample counts per node, weighted by the time between samples.
const selfUs = new Map()
const deltas = profile.timeDeltas
for (let i = 0; i < profile.samples.length; i++) {
  const id = profile.samples[i]
  selfUs.set(id, (selfUs.get(id) ?? 0) + (deltas[i + 1] ?? deltas[i] ?? 0))
}
const total = [...selfUs.values()].reduce((a, b) => a + b, 0)

function where (frame) {
  const url = frame.url ?? ''
  if (url === '') return '(native/V8)'
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (m !== null) return m[1]
  if (url.startsWith('node:')) return url
  const rel = url.replace(/^file:\/\//, '')
  return path.relative(process.cwd(), rel)
}

const byFunction = new Map()
const byPlace = new Map()
for (const [id, us] of selfUs) {
  const frame = nodes.get(id).callFrame
  const name = frame.functionName || '(anonymous)'
  const place = where(frame)
  const key = `${name}  ${place}${frame.url ? `:${frame.lineNumber + 1}` : ''}`
  byFunction.set(key, (byFunction.get(key) ?? 0) + us)
  byPlace.set(place, (byPlace.get(place) ?? 0) + us)
}

// Inclusive time of a few functions that matter for fan-out, through the call tree.
const parent = new Map()
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
function inclusive (predicate) {
  let us = 0
  for (const [id, t] of selfUs) {
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      if (predicate(nodes.get(cur).callFrame)) { us += t; break }
    }
  }
  return us
}

const pct = us => `${(100 * us / total).toFixed(1).padStart(5)}%`
const out = []
out.push(`${file}: ${(total / 1e6).toFixed(2)} s sampled`)
out.push('', 'self time by package / file:')
for (const [place, us] of [...byPlace].sort((a, b) => b[1] - a[1]).slice(0, 20)) out.push(`  ${pct(us)}  ${place}`)
out.push('', `self time by function (top ${top}):`)
for (const [key, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) out.push(`  ${pct(us)}  ${key}`)
out.push('', 'inclusive time:')
for (const name of ['groupSend', 'groupSendLocal', 'cloneMessage', 'copyMessage', 'receive', 'sendJson', 'stringify', 'send', 'sendFrame', 'writeGeneric', 'writevGeneric', '#drain', '#run', '#pump', 'findHandler', 'garbage collector']) {
  const us = inclusive(f => f.functionName === name || f.functionName === `(${name})`)
  if (us > 0) out.push(`  ${pct(us)}  ${name}`)
}
process.stdout.write(out.join('\n') + '\n')
