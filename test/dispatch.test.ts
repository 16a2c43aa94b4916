import t from 'tap'
import { handlerNames } from '../lib/dispatch.js'

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
