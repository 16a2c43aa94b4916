import t from 'tap'
import { TokenBucket } from '../../lib/connection/rate-limit.js'

// The token bucket on its own, with a clock the test holds: a burst up to `messages`, then
// `messages` per `interval` on average, never more.

t.test('a burst of `messages`, then what the refill allows', async t => {
  const bucket = new TokenBucket(5, 1000, 0)
  const burst = Array.from({ length: 6 }, () => bucket.take(0))
  t.same(burst, [true, true, true, true, true, false], 'five at once, not six')
  t.notOk(bucket.take(100), 'a tenth of the interval refills half a token: still empty')
  t.ok(bucket.take(200), 'a fifth refills one')
  t.notOk(bucket.take(200))
  t.ok(bucket.take(10_000) && bucket.take(10_000) && bucket.take(10_000) && bucket.take(10_000) && bucket.take(10_000), 'a long pause refills to the brim')
  t.notOk(bucket.take(10_000), 'never beyond it')
})

t.test('a steady rate at the limit passes; just above it does not', async t => {
  const atLimit = new TokenBucket(10, 1000, 0)
  let passed = 0
  for (let ms = 0; ms < 10_000; ms += 100) if (atLimit.take(ms)) passed++
  t.equal(passed, 100, '10 per second for 10 s: all pass')
  const above = new TokenBucket(10, 1000, 0)
  let refused = 0
  for (let ms = 0; ms < 10_000; ms += 90) if (!above.take(ms)) refused++
  t.ok(refused > 0, `11 per second is refused at times (${refused} of ${Math.ceil(10_000 / 90)})`)
})

t.test('resumed(): the time a connection was not read refills past the brim, once, by what it would have refilled', async t => {
  const bucket = new TokenBucket(10, 1000, 0)
  for (let i = 0; i < 10; i++) bucket.take(0)
  // Not read from 0 to 3000 ms: the client may have sent its 10 and 30 more meanwhile.
  bucket.resumed(3000, 3000)
  let passed = 0
  while (bucket.take(3000)) passed++
  t.equal(passed, 30, 'the 30 frames of the 3 s arrive together and pass (the burst was spent before)')
  const idle = new TokenBucket(10, 1000, 0)
  idle.resumed(3000, 3000)
  // Paused again at once by the burst it let in: what is left is kept, not cut back to the brim.
  idle.resumed(0, 3000)
  passed = 0
  while (idle.take(3000)) passed++
  t.equal(passed, 40, 'an unspent bucket: its 10 and the 30 of the pause, kept across the next, shorter pause')
  idle.resumed(1000, 13_000)
  passed = 0
  while (idle.take(13_000)) passed++
  t.equal(passed, 20, 'and never more than the brim plus the last pause: 10 s of refill do not add up')
  t.ok(idle.take(13_100), 'then the usual rate: one more a tenth of a second later')
  t.notOk(idle.take(13_100))
})
