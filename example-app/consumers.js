/**
 * The example's consumers and its background worker, written as a user of the package would.
 *
 *   /ws/chat/:room   ChatConsumer    messages with the author's name, join and leave notices
 *   /ws/clock        ClockConsumer   a tick every second, group-sent by one timer per process
 *   /ws/deploy       DeployConsumer  starts deploys; every page sees every deploy's progress
 *   'deploy-jobs'    DeployWorker    runs the deploys, one server per message
 */
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { ChannelConsumer, JsonWebsocketConsumer } from 'fastify-channels'

/** Names this process in what it sends, so two processes sharing Redis can be told apart. */
export const serverLabel = process.env.SERVER_LABEL ?? `:${process.env.PORT ?? 3000}`

/**
 * Each process ticks its own clock group: with two processes on one Redis, a shared group would
 * get two ticks a second.
 */
export const clockGroup = `clock.${randomBytes(6).toString('hex')}`

export const DEPLOY_CHANNEL = 'deploy-jobs'
const DEPLOY_GROUP = 'deploys'
export const MAX_SERVERS = 12
const ROOM = /^[a-z0-9][a-z0-9-]{0,29}$/
let release = 14

/** Every socket of the example needs a signed-in user; without one the handshake gets a 403. */
function signedIn (consumer) {
  return typeof consumer.scope.user?.name === 'string'
}

export class ChatConsumer extends JsonWebsocketConsumer {
  room = ''
  group = ''

  async connect () {
    const room = this.scope.params.room
    if (!signedIn(this) || !ROOM.test(room)) {
      await this.close()
      return
    }
    this.room = room
    this.group = `chat.${room}`
    await this.channelLayer.groupAdd(this.group, this.channelName)
    await this.accept()
    await this.sendJson({ type: 'hello', room, user: this.scope.user.name, server: serverLabel })
    await this.channelLayer.groupSend(this.group, { type: 'chat.join', user: this.scope.user.name, from: this.channelName })
  }

  async receiveJson (content) {
    const text = typeof content?.text === 'string' ? content.text.trim().slice(0, 500) : ''
    if (text === '') return
    await this.channelLayer.groupSend(this.group, {
      type: 'chat.message', user: this.scope.user.name, text, at: Date.now(), via: serverLabel
    })
  }

  async chatMessage (event) {
    await this.sendJson({ type: 'message', user: event.user, text: event.text, at: event.at, via: event.via })
  }

  async chatJoin (event) {
    if (event.from !== this.channelName) await this.sendJson({ type: 'join', user: event.user })
  }

  async chatLeave (event) {
    await this.sendJson({ type: 'leave', user: event.user })
  }

  async disconnect () {
    // Our own membership is removed by the plugin once this returns; the others hear we left.
    if (this.room !== '') await this.channelLayer.groupSend(this.group, { type: 'chat.leave', user: this.scope.user.name })
  }
}

export class ClockConsumer extends JsonWebsocketConsumer {
  groups = [clockGroup]

  async connect () {
    if (!signedIn(this)) {
      await this.close()
      return
    }
    await this.accept()
    await this.sendJson({ type: 'tick', now: Date.now(), server: serverLabel })
  }

  async clockTick (event) {
    await this.sendJson({ type: 'tick', now: event.now, server: event.server })
  }
}

/** Sends the tick every consumer of this process's clock group receives. Returns the stopper. */
export function startClock (layer, log) {
  const timer = setInterval(() => {
    layer.groupSend(clockGroup, { type: 'clock.tick', now: Date.now(), server: serverLabel })
      .catch(err => log.warn({ err }, 'clock tick not sent'))
  }, 1000)
  return () => clearInterval(timer)
}

export class DeployConsumer extends JsonWebsocketConsumer {
  groups = [DEPLOY_GROUP]

  async connect () {
    if (!signedIn(this)) {
      await this.close()
      return
    }
    await this.accept()
  }

  async receiveJson (content) {
    const servers = Number(content?.servers)
    if (content?.action !== 'start' || !Number.isInteger(servers) || servers < 1 || servers > MAX_SERVERS) {
      await this.sendJson({ type: 'error', message: `Choose between 1 and ${MAX_SERVERS} servers.` })
      return
    }
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
      await this.sendJson({ type: 'error', message: 'Too many deploys are waiting; try again in a moment.' })
    }
  }

  async deployProgress (event) {
    const { type, replyGroup, ...progress } = event
    await this.sendJson({ type: 'deploy', ...progress })
  }
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
    await this.channelLayer.send(this.channelName, { ...job, type: 'deploy.step', index: 0 })
  }

  async deployStep (job) {
    const host = `${ROLES[job.index % ROLES.length]}-${String(job.index + 1).padStart(2, '0')}`
    await sleep(250 + Math.floor(Math.random() * 250)) // drain, pull the image, restart, health check
    const done = job.index + 1
    const finished = done === job.servers
    await this.#report(job, done, finished ? 'succeeded' : 'running', `${host} updated, healthy`)
    if (!finished) await this.channelLayer.send(this.channelName, { ...job, type: 'deploy.step', index: done })
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
