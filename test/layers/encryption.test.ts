import t from 'tap'
import { randomBytes } from 'node:crypto'
import { InvalidOptionError } from '../../lib/errors.js'
import { PayloadCipher } from '../../lib/layers/encryption.js'

// AES-256-GCM payloads: the first key seals, any key opens, anything altered opens with none.

t.test('seal and open, with rotation', async t => {
  const [a, b] = [randomBytes(32), randomBytes(32)]
  const plain = Buffer.from('the message content')
  const sealedA = new PayloadCipher([a]).seal(plain)
  t.notOk(sealedA.includes(plain), 'the content is not in the sealed bytes')
  t.not(new PayloadCipher([a]).seal(plain).toString('hex'), sealedA.toString('hex'), 'a fresh IV each time')
  t.same(new PayloadCipher([b, a.toString('base64')]).open(sealedA), plain, 'an older key (as base64) still opens')
  t.equal(new PayloadCipher([b]).open(sealedA), undefined, 'another key does not')
  const tampered = Buffer.from(sealedA)
  tampered[20] ^= 1
  t.equal(new PayloadCipher([a]).open(tampered), undefined, 'a changed byte fails authentication')
  t.equal(new PayloadCipher([a]).open(sealedA.subarray(0, 10)), undefined, 'too short')
})

t.test('keys are checked', async t => {
  for (const keys of [undefined, [], 'k', [randomBytes(16)], [randomBytes(32), 'c2hvcnQ='], [42]]) {
    t.throws(() => new PayloadCipher(keys), InvalidOptionError, JSON.stringify(keys) ?? 'undefined')
  }
})
