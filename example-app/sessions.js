/**
 * Session stores for the example. @fastify/session's default store forgets every session when the
 * process restarts, and is private to one process. These keep people signed in across a restart
 * (a JSON file) and across processes (Redis, next to the channel layer).
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { Redis } from 'ioredis'

const WEEK_MS = 7 * 24 * 3600 * 1000

function expiresAt (session) {
  const expires = session?.cookie?.expires ?? session?.cookie?._expires
  return expires ? new Date(expires).getTime() : Date.now() + WEEK_MS
}

/** One process; the sessions survive a restart. */
export class FileSessionStore {
  #file
  #sessions = new Map()

  constructor (file) {
    this.#file = file
    try {
      const saved = JSON.parse(readFileSync(file, 'utf8'))
      for (const [id, session] of Object.entries(saved)) {
        if (expiresAt(session) > Date.now()) this.#sessions.set(id, session)
      }
    } catch {
      // No file yet, or an unreadable one: start empty.
    }
  }

  get (id, callback) {
    const session = this.#sessions.get(id)
    if (session !== undefined && expiresAt(session) <= Date.now()) {
      this.destroy(id, err => callback(err, null))
      return
    }
    callback(null, session ?? null)
  }

  set (id, session, callback) {
    // A JSON round trip is what a real store does: the session comes back as plain data.
    this.#sessions.set(id, JSON.parse(JSON.stringify(session)))
    this.#save(callback)
  }

  destroy (id, callback) {
    this.#sessions.delete(id)
    this.#save(callback)
  }

  #save (callback) {
    try {
      mkdirSync(dirname(this.#file), { recursive: true })
      const tmp = `${this.#file}.${process.pid}.tmp`
      writeFileSync(tmp, JSON.stringify(Object.fromEntries(this.#sessions)), { mode: 0o600 })
      renameSync(tmp, this.#file)
      callback()
    } catch (err) {
      callback(err)
    }
  }
}

/** Shared by every process that uses the same Redis. */
export class RedisSessionStore {
  #redis
  #prefix

  constructor (url, prefix, log) {
    this.#redis = new Redis(url, { lazyConnect: false, maxRetriesPerRequest: 2 })
    this.#prefix = prefix
    // Without a listener, ioredis prints every failed reconnect to stderr with its stack, outside
    // the app's log. One line per outage here: the requests that need a session fail meanwhile.
    let down = false
    this.#redis.on('error', err => {
      if (down) return
      down = true
      log.warn({ err }, 'session store: Redis unreachable; sessions cannot be read or saved until it is back')
    })
    this.#redis.on('ready', () => {
      if (down) log.info('session store: Redis is back')
      down = false
    })
  }

  get (id, callback) {
    this.#redis.get(this.#prefix + id).then(
      text => callback(null, text === null ? null : JSON.parse(text)),
      err => callback(err))
  }

  set (id, session, callback) {
    const ttl = Math.max(1000, expiresAt(session) - Date.now())
    this.#redis.set(this.#prefix + id, JSON.stringify(session), 'PX', ttl).then(() => callback(), err => callback(err))
  }

  destroy (id, callback) {
    this.#redis.del(this.#prefix + id).then(() => callback(), err => callback(err))
  }

  async close () {
    await this.#redis.quit()
  }
}
