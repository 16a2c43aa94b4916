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
  const key = randomBytes(32)
  const sealed = new PayloadCipher([key]).seal(Buffer.from('x'))
  for (const [form, text] of [['base64', key.toString('base64')], ['base64 read from a file, with its newline', `${key.toString('base64')}\n`],
    ['base64url', key.toString('base64url')], ['base64 without its padding', key.toString('base64').replace(/=+$/, '')]]) {
    t.same(new PayloadCipher([text]).open(sealed), Buffer.from('x'), `${form}: the same key`)
  }
  // Each of these decodes leniently to 32 bytes: taken as keys, they would be keys nobody chose.
  const passphrase = 'correcthorsebatterystaplecorrecthorsebatter'
  t.equal(Buffer.from(passphrase, 'base64').length, 32)
  t.throws(() => new PayloadCipher([passphrase]), { code: 'FST_CHANNELS_INVALID_OPTION', message: /encryptionKeys\[0\] is not base64 of 32 bytes.*a passphrase is not a key/ }, 'a passphrase')
  const junk = key.toString('base64').slice(0, 20) + '$$$%%%' + key.toString('base64').slice(20)
  t.throws(() => new PayloadCipher([key, junk]), { code: 'FST_CHANNELS_INVALID_OPTION', message: /encryptionKeys\[1\] is not base64/ }, 'base64 with characters that are not base64 in it')
  t.throws(() => new PayloadCipher([key.toString('hex')]), { message: /looks like hex; pass Buffer\.from\(key, 'hex'\)/ }, 'hex: the message says what to do')
  t.ok(new PayloadCipher([Buffer.from(key.toString('hex'), 'hex')]), 'which works')
})
