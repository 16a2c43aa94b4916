import t from 'tap'
import { findHandler, handlerNames, isReservedName } from '../lib/dispatch.js'
import { ChannelConsumer, JsonWebsocketConsumer } from '../lib/index.js'

t.test('type to handler names: camelCase first, then Django\'s snake name', async t => {
  t.same(handlerNames('chat.message'), ['chatMessage', 'chat_message'])
  t.same(handlerNames('user_joined'), ['userJoined', 'user_joined'])
  t.same(handlerNames('deploy.progress_update'), ['deployProgressUpdate', 'deploy_progress_update'])
  t.same(handlerNames('tick'), ['tick'])
  t.same(handlerNames('_private'), [])
  t.same(handlerNames('.private'), ['private'], 'never a name starting with _, through the snake name either')
  t.same(handlerNames(''), [])
  t.same(handlerNames('...'), [])
})

t.test('a name is reserved by the base classes a consumer has, not by every class of the package', async t => {
  const consumer = Object.create(JsonWebsocketConsumer.prototype) as object
  class Json extends JsonWebsocketConsumer {
    async handle (): Promise<void> {}
    async forward (): Promise<void> {}
  }
  const json = Object.create(Json.prototype) as object
  t.equal(findHandler(json, 'handle'), Json.prototype.handle, 'handle() is an HTTP consumer\'s method, not a JSON consumer\'s: a handler here')
  t.equal(findHandler(json, 'forward'), Json.prototype.forward, 'forward() is a GroupsConsumer\'s, not a JSON consumer\'s')
  for (const type of ['send', 'send_json', 'receive.json', 'close', 'accept', 'scope', 'constructor', 'to.string']) {
    t.equal(findHandler(json, type), undefined, `${type}: a name of its own base classes or of Object.prototype`)
  }
  t.equal(findHandler(consumer, 'handle'), undefined, 'no such method at all')
  t.equal(isReservedName('send', ChannelConsumer.prototype), false, 'a worker may have send()')
  t.equal(isReservedName('channelLayer', ChannelConsumer.prototype), true, 'but not a handler named after its fields')
})
