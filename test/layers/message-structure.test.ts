// A fan-out's copies made by compiled code (lib/layers/message-structure.ts): what they must be is in
// the conformance suite (conformance-messages.ts, "a group of many members"); here, a process that
// forbids code generation still gets every copy, made the generic way.
import t from 'tap'
import { execFile } from 'node:child_process'
import { ensureBuilt } from '../helpers/dist.js'

t.test('under --disallow-code-generation-from-strings, a fan-out to many members still copies exactly', async t => {
  await ensureBuilt()
  const script = `
    import { InMemoryChannelLayer } from 'fastify-channels'
    let forbidden = false
    try { new Function('return 1') } catch { forbidden = true }
    const layer = new InMemoryChannelLayer()
    const members = []
    for (let i = 0; i < 10; i++) members.push(await layer.newChannel())
    for (const channel of members) await layer.groupAdd('g', channel)
    const got = []
    for (let n = 0; n < 3; n++) {
      await layer.groupSend('g', { type: 'm', payload: { n, list: [{ n }] } })
      const copies = []
      for (const channel of members) copies.push(await layer.receive(channel))
      got.push({ exact: copies.every(copy => JSON.stringify(copy) === JSON.stringify({ type: 'm', payload: { n, list: [{ n }] } })),
        own: new Set(copies.map(copy => copy.payload)).size === copies.length })
    }
    await layer.close()
    console.log(JSON.stringify({ forbidden, got }))
  `
  const output = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ['--disallow-code-generation-from-strings', '--input-type=module', '-e', script], { cwd: process.cwd(), timeout: 30_000 },
      (err, stdout, stderr) => err === null ? resolve(stdout) : reject(new Error(`${err.message}\n${stderr}`)))
  })
  const round = { exact: true, own: true }
  t.same(JSON.parse(output), { forbidden: true, got: [round, round, round] }, 'every member got its own exact copy of each message')
})
