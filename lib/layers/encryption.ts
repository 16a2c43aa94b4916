/**
 * Payload encryption for a layer whose backend others can read (a shared or managed Redis):
 * channels_redis' `symmetric_encryption_keys`, with AES-256-GCM from node:crypto. The first key
 * seals; any key opens, so keys rotate without downtime: add the new key first on every process,
 * then drop the old one once nothing sealed with it can still be in the backend.
 *
 * A sealed payload is: key id (4 bytes, from a hash of the key, so the right key is found at
 * once) | IV (12) | ciphertext | GCM tag (16).
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto'
import { InvalidOptionError } from '../errors.js'

const KEY_BYTES = 32
const ID_BYTES = 4
const IV_BYTES = 12
const TAG_BYTES = 16

/** A key as the option takes it: 32 bytes, or their base64. */
export type EncryptionKey = Uint8Array | string

interface Key {
  id: Buffer
  secret: Buffer
}

export class PayloadCipher {
  readonly #keys: Key[]

  constructor (keys: unknown) {
    if (!Array.isArray(keys) || keys.length === 0) {
      throw new InvalidOptionError('option "encryptionKeys" must be a non-empty array of 32-byte keys (Buffers or base64 strings), the current key first')
    }
    this.#keys = keys.map((key, i) => {
      const secret = typeof key === 'string' ? fromBase64(key, i) : key instanceof Uint8Array ? Buffer.from(key) : undefined
      if (secret?.length !== KEY_BYTES) {
        throw new InvalidOptionError(`encryptionKeys[${i}] must be ${KEY_BYTES} bytes (a Buffer, or base64 of 32 bytes), got ${secret === undefined ? typeof key : `${secret.length} bytes`}`)
      }
      return { id: createHash('sha256').update(secret).digest().subarray(0, ID_BYTES), secret }
    })
  }

  seal (plain: Buffer): Buffer {
    const { id, secret } = this.#keys[0]
    const iv = randomBytes(IV_BYTES)
    const cipher = createCipheriv('aes-256-gcm', secret, iv)
    const body = cipher.update(plain)
    const last = cipher.final()
    return Buffer.concat([id, iv, body, last, cipher.getAuthTag()])
  }

  /** Whether the payload names one of these keys (if it does not open, it was changed since). */
  hasKeyFor (sealed: Uint8Array): boolean {
    const id = Buffer.from(sealed.buffer, sealed.byteOffset, Math.min(sealed.byteLength, ID_BYTES))
    return this.#keys.some(k => k.id.equals(id))
  }

  /** The plain payload, or undefined when no key opens it (another key, or tampered with). */
  open (sealed: Uint8Array): Buffer | undefined {
    if (sealed.length < ID_BYTES + IV_BYTES + TAG_BYTES) return undefined
    const data = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength)
    const id = data.subarray(0, ID_BYTES)
    const key = this.#keys.find(k => k.id.equals(id))
    if (key === undefined) return undefined
    try {
      const decipher = createDecipheriv('aes-256-gcm', key.secret, data.subarray(ID_BYTES, ID_BYTES + IV_BYTES))
      decipher.setAuthTag(data.subarray(data.length - TAG_BYTES))
      return Buffer.concat([decipher.update(data.subarray(ID_BYTES + IV_BYTES, data.length - TAG_BYTES)), decipher.final()])
    } catch {
      return undefined
    }
  }
}

/**
 * A key's base64 (or base64url; padding and whitespace around it optional), read strictly: Node's
 * decoder skips what is not base64, so a passphrase or a key in hex would otherwise become 32
 * bytes of key that nobody chose.
 */
function fromBase64 (key: string, i: number): Buffer {
  const text = key.trim().replace(/-/g, '+').replace(/_/g, '/').replace(/=+$/, '')
  const secret = Buffer.from(text, 'base64')
  if (secret.length === KEY_BYTES && secret.toString('base64').replace(/=+$/, '') === text) return secret
  const hint = /^[0-9a-f]{64}$/i.test(key.trim())
    ? ': this looks like hex; pass Buffer.from(key, \'hex\')'
    : ' (as `openssl rand -base64 32` prints it); a passphrase is not a key'
  throw new InvalidOptionError(`encryptionKeys[${i}] is not base64 of ${KEY_BYTES} bytes${hint}`)
}
