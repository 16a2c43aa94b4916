/**
 * The example app's chat through its own socket, as its page speaks to it: a line whose reply was
 * lost with the connection is sent again with `retry`, and goes into the room once.
 */
import t from 'tap'
import WebSocket from 'ws'
import { exampleApp, signIn } from '../helpers/example-app.js'

t.test('a post sent again with retry and the same nonce is posted once; another nonce is another line', async t => {
  const base = await exampleApp(t)
  const cookie = await signIn(base, 'Ada')
  const ws = new WebSocket(`${base.replace('http', 'ws')}/ws/app`, { headers: { cookie, origin: base } })
  t.teardown(() => { ws.terminate() })
  const replies = new Map<number, unknown>()
  ws.on('message', (data) => {
    const frame = JSON.parse(String(data)) as { op: string, id?: number }
    if (frame.op === 'reply' && frame.id !== undefined) replies.set(frame.id, frame)
  })
  await new Promise<void>((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  let id = 0
  const call = async (action: string, args: unknown): Promise<unknown> => {
    const mine = ++id
    ws.send(JSON.stringify({ op: 'call', id: mine, action, args }))
    for (let i = 0; i < 200 && !replies.has(mine); i++) await new Promise(resolve => setTimeout(resolve, 10))
    return replies.get(mine)
  }
  const first = await call('post', { room: 'retries', text: 'hello once', nonce: 'n-1' })
  t.match(first, { result: { offset: 1 } })
  t.match(await call('post', { room: 'retries', text: 'hello once', nonce: 'n-1', retry: true }), { result: { offset: 1 } },
    'the retry finds the line in the room and answers with its offset')
  t.match(await call('post', { room: 'retries', text: 'hello again', nonce: 'n-2', retry: true }), { result: { offset: 2 } },
    'a retry of a line the room does not have posts it')
  const history = await call('history', { room: 'retries' }) as { result: { messages: Array<{ text: string }> } }
  t.same(history.result.messages.map(m => m.text), ['hello once', 'hello again'], 'each line once')
})
