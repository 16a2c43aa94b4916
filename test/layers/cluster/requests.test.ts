import t from 'tap'
import { LayerClosedError, RemoteLayerError } from '../../../lib/errors.js'
import { Requests, checkReply, replyFor } from '../../../lib/layers/cluster/requests.js'

// Requests to a channel's owner: a refusal there is reported as what it is, not as a timeout.

t.test('a reply settles its request; closing answers every open one', async t => {
  const requests = new Requests()
  const a = requests.open()
  const b = requests.open()
  t.not(a.id, b.id)
  t.equal(requests.size, 2)
  requests.settle(a.id, { code: '', reason: '' })
  t.same(await a.reply, { code: '', reason: '' })
  requests.close()
  const closed = await b.reply
  t.throws(() => checkReply(closed, 'add', 'room', 'specific.abc!x'), LayerClosedError)
  t.equal(requests.size, 0)
})

t.test('the owner\'s error comes back with its code', async t => {
  const reply = replyFor(Object.assign(new Error('Redis did not answer'), { code: 'FST_CHANNELS_LAYER_TIMEOUT' }))
  t.same(reply, { code: 'FST_CHANNELS_LAYER_TIMEOUT', reason: 'Redis did not answer' })
  const err = (() => { try { checkReply(reply, 'add', 'room', 'specific.abc!x') } catch (e) { return e } })()
  t.ok(err instanceof RemoteLayerError)
  t.match(err, {
    code: 'FST_CHANNELS_REMOTE_FAILED',
    remoteCode: 'FST_CHANNELS_LAYER_TIMEOUT',
    message: 'The process that owns channel "specific.abc!x" could not add it to group "room": Redis did not answer'
  })
  t.same(replyFor(new TypeError('boom')), { code: 'FST_CHANNELS_REMOTE_FAILED', reason: 'boom' })
  t.doesNotThrow(() => checkReply({ code: '', reason: '' }, 'discardChannel', '', 'specific.abc!x'))
})
