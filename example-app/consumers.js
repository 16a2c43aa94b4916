/**
 * The example's consumer and its background worker, written as a user of the package would.
 *
 *   /ws/app          AppConsumer     one socket per page (GroupsConsumer): chat rooms with presence
 *                                    and history, the deploys' progress, the clock; actions post,
 *                                    history, deploy and deploys
 *   'deploy-jobs'    DeployWorker    runs the deploys, one server per message
 */
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { ChannelConsumer, GroupsConsumer } from 'fastify-channels'

/** Names this process in what it sends, so two processes sharing Redis can be told apart. */
export const serverLabel = process.env.SERVER_LABEL ?? `:${process.env.PORT ?? 3000}`

/**
 * Each process ticks its own clock group: with two processes on one Redis, a shared group would
 * get two ticks a second. The name stays the same across a restart, so a page re-joins it.
 */
export const clockGroup = `clock.${serverLabel.replace(/[^a-zA-Z0-9._-]/g, '') || 'main'}`

export const DEPLOY_CHANNEL = 'deploy-jobs'

/** The group of one session's sockets: signing out closes them all. */
export function sessionGroup (sessionId) {
  return `session.${String(sessionId).replace(/[^a-zA-Z0-9._-]/g, '').slice(0, 90)}`
}
export const DEPLOY_GROUP = 'deploys'
export const MAX_SERVERS = 12
const ROOM = '^[a-z0-9][a-z0-9-]{0,29}$'
const ROOM_GROUP = /^room\.[a-z0-9][a-z0-9-]{0,29}$/
// Any process's clock: behind a proxy without sticky sessions, the page was told its clock by
// /api/me on one process and its socket may be held by another; the ticks come over the layer.
const CLOCK_GROUP = /^clock\.[a-zA-Z0-9._-]{1,40}$/
let release = 14

/** The layer's group policies: rooms keep their last 200 lines and say who is in them; deploys replay their progress. */
export const groupPolicies = {
  'room.*': { history: { size: 200, ttl: 3600 }, presenceEvents: true },
  [DEPLOY_GROUP]: { history: { size: 500, ttl: 3600 } }
}

const room = { type: 'string', pattern: ROOM }

export class AppConsumer extends GroupsConsumer {
  static actions = {
    post: {
      schema: {
        type: 'object',
        required: ['room', 'text'],
        additionalProperties: false,
        // nonce: the page's id for the line; retry: the page sends it again after the connection
        // dropped before the reply (post() then posts it only if the room does not have it yet).
        properties: { room, text: { type: 'string', minLength: 1, maxLength: 500 }, nonce: { type: 'string', maxLength: 40 }, retry: { type: 'boolean' } }
      }
    },
    history: { schema: { type: 'object', required: ['room'], additionalProperties: false, properties: { room } } },
    deploys: { schema: { type: 'object', additionalProperties: false } },
    deploy: {
      schema: {
        type: 'object',
        required: ['servers'],
        additionalProperties: false,
        properties: { servers: { type: 'integer', minimum: 1, maximum: MAX_SERVERS } }
      }
    }
  }

  // Every socket of the example needs a signed-in user; without one the handshake gets a 403.
  // Each socket is in its session's group, so that signing out in one tab closes the others.
  async connect () {
    if (typeof this.scope.user?.name !== 'string') {
      await this.close()
      return
    }
    await this.channelLayer.groupAdd(sessionGroup(this.scope.session.sessionId), this.channelName)
    await this.accept()
  }

  /** The session was signed out (in another tab too): this socket ends; the page then shows the sign-in. */
  async sessionEnded () {
    await this.close(4001, 'signed out')
  }

  canJoin (group) {
    return ROOM_GROUP.test(group) || group === DEPLOY_GROUP || CLOCK_GROUP.test(group)
  }

  presenceInfo (group) {
    return group.startsWith('room.') ? { id: userId(this.scope.user), name: this.scope.user.name } : undefined
  }

  /**
   * A chat line, to everyone in the room (and into its history). A call whose reply was lost (the
   * connection dropped: was it posted?) is sent again with `retry`: posted only if the room's
   * recent lines do not have it, so a line goes in once whichever process takes the retry.
   */
  async post ({ room, text, nonce, retry = false }) {
    const line = text.trim()
    if (line === '') throw Object.assign(new Error('Say something first.'), { statusCode: 400, code: 'EMPTY_MESSAGE' })
    const group = `room.${room}`
    const from = userId(this.scope.user)
    if (retry && nonce !== undefined) {
      const { messages } = await this.channelLayer.history(group, { limit: 50 })
      const posted = messages.find(({ message }) => message.nonce === nonce && message.userId === from)
      if (posted !== undefined) return { offset: posted.offset }
    }
    const at = await this.channelLayer.groupSend(group, {
      type: 'chat.message', user: this.scope.user.name, userId: from, text: line, at: Date.now(), via: serverLabel, ...(nonce === undefined ? {} : { nonce })
    })
    return { offset: at?.offset }
  }

  /** The room's last 50 lines with their offsets: what a page shows on arrival, or after a gap. */
  async history ({ room }) {
    return recent(this.channelLayer, `room.${room}`, 50)
  }

  /** The deploys' last 200 progress events with their offsets: what a page shows on arrival, or after a gap. */
  async deploys () {
    return recent(this.channelLayer, DEPLOY_GROUP, 200)
  }

  async deploy ({ servers }) {
    const job = {
      type: 'deploy.start',
      jobId: randomBytes(3).toString('hex'),
      servers,
      by: this.scope.user.name,
      version: `v2.${release++}.0`,
      replyGroup: DEPLOY_GROUP
    }
    try {
      await this.channelLayer.send(DEPLOY_CHANNEL, job)
    } catch (err) {
      this.log.warn({ err }, 'deploy not queued')
      throw Object.assign(new Error('Too many deploys are waiting; try again in a moment.'), { statusCode: 429, code: 'DEPLOYS_BUSY' })
    }
    return { jobId: job.jobId }
  }
}

/** Sends the tick every page joined to this process's clock group receives. Returns the stopper. */
export function startClock (layer, log) {
  const timer = setInterval(() => {
    layer.groupSend(clockGroup, { type: 'clock.tick', now: Date.now(), server: serverLabel })
      .catch(err => log.warn({ err }, 'clock tick not sent'))
  }, 1000)
  return () => clearInterval(timer)
}

const ROLES = ['web', 'api', 'web', 'jobs']

/**
 * Runs deploys. Each server is its own message on the worker's channel, so a worker that handles
 * one message at a time still moves every running deploy forward, and with Redis the steps of one
 * deploy spread over the worker processes.
 */
export class DeployWorker extends ChannelConsumer {
  async deployStart (job) {
    await this.#report(job, 0, 'running', `started by ${job.by}`)
    await this.#next(job, 0)
  }

  async deployStep (job) {
    const host = `${ROLES[job.index % ROLES.length]}-${String(job.index + 1).padStart(2, '0')}`
    await sleep(250 + Math.floor(Math.random() * 250)) // drain, pull the image, restart, health check
    const done = job.index + 1
    const finished = done === job.servers
    await this.#report(job, done, finished ? 'succeeded' : 'running', `${host} updated, healthy`)
    if (!finished) await this.#next(job, done)
  }

  /**
   * Queues the deploy's next server. When new deploys have filled the queue meanwhile, this one
   * stops and says so, rather than stay "running" with nothing left to move it.
   */
  async #next (job, index) {
    try {
      await this.channelLayer.send(this.channelName, { ...job, type: 'deploy.step', index })
    } catch (err) {
      if (err?.code !== 'FST_CHANNELS_CHANNEL_FULL') throw err
      await this.#report(job, index, 'failed', 'stopped: too many deploys waiting')
    }
  }

  // Private: a message type can never name it.
  async #report (job, done, status, line) {
    await this.channelLayer.groupSend(job.replyGroup, {
      type: 'deploy.progress',
      jobId: job.jobId,
      by: job.by,
      version: job.version,
      servers: job.servers,
      done,
      pct: Math.round((100 * done) / job.servers),
      status,
      line,
      worker: serverLabel,
      at: Date.now()
    })
  }
}

/** A group's last `limit` messages, each with its offset, and the epoch they belong to. */
async function recent (layer, group, limit) {
  const { messages, position } = await layer.history(group, { limit })
  return { epoch: position?.epoch ?? null, messages: messages.map(({ message, offset }) => ({ ...message, offset })) }
}

/** Who a user is: the id given at sign-in (a session from before ids were given has its name). */
function userId (user) {
  return user.id ?? user.name
}
