import t from 'tap'
import { assertChannelName, assertChannelPrefix, assertGroupName, isProcessSpecific, processTokenOf } from '../../lib/layers/names.js'

// Channels' naming rules, byte for byte, so names travel unchanged between Django and Node.

function ok (check: (name: unknown) => void, name: unknown): boolean {
  try {
    check(name)
    return true
  } catch (err) {
    if ((err as { code?: string }).code !== 'FST_CHANNELS_INVALID_NAME' || !(err instanceof TypeError)) throw err
    return false
  }
}

t.test('channel names', async t => {
  for (const name of ['jobs', 'a-b_c.d', 'specific.abc!x', 'specific.abc!', 'x'.repeat(99)]) t.ok(ok(assertChannelName, name), name)
  for (const name of ['', 'has space', 'a!b!c', 'ü', 'x'.repeat(100), 'a:b', 42, null]) t.notOk(ok(assertChannelName, name), String(name))
})

t.test('group names', async t => {
  for (const name of ['chat_lobby', 'room.1', 'A-Z', 'x'.repeat(99)]) t.ok(ok(assertGroupName, name), name)
  for (const name of ['', 'a!b', 'room 1', 'x'.repeat(100), '{tag}', undefined]) t.notOk(ok(assertGroupName, name), String(name))
})

t.test('a newChannel prefix is judged by the name it makes', async t => {
  t.ok(ok(name => assertChannelPrefix(name, `${String(name)}.abc!def`), 'worker.jobs'))
  t.notOk(ok(name => assertChannelPrefix(name, `${String(name)}.abc!def`), 'a!b'))
  t.notOk(ok(name => assertChannelPrefix(name, `${String(name)}.abc!def`), 'p'.repeat(95)), 'too long once completed')
})

t.test('process tokens', async t => {
  t.ok(isProcessSpecific('specific.abc!x'))
  t.notOk(isProcessSpecific('jobs'))
  t.equal(processTokenOf('specific.0123456789ab!xyz'), '0123456789ab')
  t.equal(processTokenOf('worker.jobs.tok!r'), 'tok')
  t.equal(processTokenOf('jobs'), undefined)
  t.equal(processTokenOf('nodot!x'), undefined)
})
