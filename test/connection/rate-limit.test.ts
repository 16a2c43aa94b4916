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
