import type { Test } from 'tap'
import { canDiscardChannel, type ChannelLayer } from '../../lib/layers/types.js'
import type { Harness } from './conformance.js'

// Joins, leaves and a channel's end, two at a time, started together: the later one asked decides.

type Define = (title: string, fn: (t: Test) => Promise<void>) => void
type Step = 'join' | 'leave' | 'end'

const STEPS: readonly Step[] = ['join', 'leave', 'end']
// When the second call is made: in the same turn, after one promise job, after one macrotask.
const GAPS = {
  tick: async (): Promise<void> => {},
  micro: async (): Promise<void> => { await null },
  macro: async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)) }
}

function run (layer: ChannelLayer, step: Step, group: string, channel: string): Promise<unknown> {
  if (step === 'join') return layer.groupAdd(group, channel)
  if (step === 'leave') return layer.groupDiscard(group, channel)
  if (!canDiscardChannel(layer)) throw new Error('the layer cannot discard a channel')
  return layer.discardChannel(channel)
}

export function conformanceTurns (test: Define, { open, unique, next }: Harness, latency: number): void {
  test('every ordered pair of join, leave and end of one channel, the second not awaiting the first, ends as the second says', async t => {
    const layer = await open(t)
    const steps = canDiscardChannel(layer) ? STEPS : STEPS.filter(step => step !== 'end')
    const cases: Array<{ title: string, group: string, channel: string, member: boolean }> = []
    // Every case at once, each in a group of its own: with or without the channel a member before,
    // with or without another member of the group.
    await Promise.all(steps.flatMap(first => steps.flatMap(second => Object.entries(GAPS).flatMap(([gap, wait]) =>
      [false, true].flatMap(before => [false, true].map(async other => {
        const group = unique('turns')
        const channel = await layer.newChannel()
        if (other) await layer.groupAdd(group, await layer.newChannel())
        if (before) await layer.groupAdd(group, channel)
        const one = run(layer, first, group, channel)
        await wait()
        await Promise.all([one, run(layer, second, group, channel)])
        cases.push({ title: `${first} then ${second} (${gap}, ${before ? 'a member' : 'not a member'} before, ${other ? 'another member' : 'alone'})`, group, channel, member: second === 'join' })
      }))))))
    for (const { group } of cases) await layer.groupSend(group, { type: 'probe' })
    await Promise.all(cases.map(async ({ title, channel, member }) => {
      if (member) t.same(await next(layer, channel).catch((err: Error) => err.name), { type: 'probe' }, `${title}: a member`)
      else t.equal(await next(layer, channel, latency).then(() => 'the probe', (err: Error) => err.name), 'TimeoutError', `${title}: not a member`)
    }))
    t.equal(cases.length, steps.length ** 2 * 12, 'every case ran')
  })
}
