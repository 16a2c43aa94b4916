/**
 * A read-only deploy log over server-sent events, for browsers and proxies where a WebSocket is not
 * wanted: /events/deploys streams every deploy's progress (what DeployWorker group-sends to its
 * reply group) with an AsyncHttpConsumer, and /deploy-log.html shows it with an EventSource.
 *
 * Recovery is the README's recipe: each event's id is the message's position in the group
 * (`epoch:offset`); a browser that reconnects sends the last one as Last-Event-ID and gets exactly
 * what it missed, or, when the group's history cannot serve it (the in-memory layer restarted), a
 * `reset` and the history the group keeps.
 *
 * Environment: DEPLOY_LOG_MAX_AGE, seconds after which a stream is ended so the browser reconnects
 * (with Last-Event-ID): long-lived streams spread again over the processes behind a load balancer
 * (default 300; 0 keeps them open).
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { AsyncHttpConsumer } from 'fastify-channels'
import { DEPLOY_GROUP as DEPLOY_LOG_GROUP, sessionGroup } from './consumers.js'

const maxAgeMs = 1000 * Number(process.env.DEPLOY_LOG_MAX_AGE ?? 300)

/** The route's hook: only signed-in people read the log (a 401 before any consumer exists). */
export async function requireUser (request, reply) {
  if (typeof request.session?.get('user')?.name !== 'string') {
    await reply.code(401).send({ statusCode: 401, error: 'Unauthorized', message: 'sign in first' })
  }
}

/** The position an event id `epoch:offset` names; undefined for anything else (the header is the client's). */
function positionOf (lastEventId) {
  if (typeof lastEventId !== 'string') return undefined
  const at = lastEventId.lastIndexOf(':')
  const epoch = lastEventId.slice(0, at)
  const offset = Number(lastEventId.slice(at + 1))
  if (at < 1 || epoch.length > 100 || !Number.isSafeInteger(offset) || offset < 0) return undefined
  return { epoch, offset }
}

export class DeployLogConsumer extends AsyncHttpConsumer {
  async handle () {
    // In its session's group, as every socket of the example: signing out (in any tab) ends it.
    await this.channelLayer.groupAdd(sessionGroup(this.scope.session.sessionId), this.channelName)
    await this.sendHeaders({ headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' } })
    await this.sendBody('retry: 1000\n\n', { more: true }) // reconnect after 1 s, not the browser's default
    if (maxAgeMs > 0) {
      this.spawn(async (signal) => {
        await sleep(maxAgeMs, undefined, { signal })
        await this.sendBody('') // the end: the browser reconnects, with Last-Event-ID
      })
    }
    const since = positionOf(this.scope.headers['last-event-id'])
    const { position, recovered } = await this.channelLayer.groupAdd(DEPLOY_LOG_GROUP, this.channelName, { since })
    if (recovered || position === null) return // what was missed comes first, through deployProgress()
    await this.sendEvent({ event: 'reset', data: { epoch: position.epoch } })
    const { messages } = await this.channelLayer.history(DEPLOY_LOG_GROUP, { limit: 500 })
    for (const { message, offset } of messages) {
      if (offset > position.offset) break // sent after the join: it comes through deployProgress()
      await this.#progress(message, position.epoch, offset)
    }
  }

  /** The session was signed out: the stream ends, and the browser's reconnect gets the 401. */
  async sessionEnded () {
    await this.sendBody('')
  }

  async deployProgress (message, info) {
    await this.#progress(message, info.epoch, info.offset)
  }

  async #progress ({ type, replyGroup, ...progress }, epoch, offset) {
    await this.sendEvent({ id: `${epoch}:${offset}`, event: 'progress', data: { ...progress, offset } })
  }
}
