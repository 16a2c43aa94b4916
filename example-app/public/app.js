// The example's page: one ChannelsClient (fastify-channels/client) for the chat, the clock and the
// deploys. The client reconnects by itself and re-joins each group from the last message seen, so
// a page that was offline or whose server restarted misses no chat line and shows none twice.
import { ChannelsClient } from '/client/index.js'

const $ = (id) => document.getElementById(id)

let client
let me = null
let info = { server: '', clock: '' }

// ---- connection indicator ---------------------------------------------------------------------

let countdown
let lost = false

function onState (state, detail) {
  const conn = $('conn')
  const text = $('conn-text')
  clearInterval(countdown)
  if (state === 'open') {
    conn.dataset.state = 'connected'
    text.textContent = 'Connected'
    if (lost) addNotice(`Reconnected to #${room}`)
    lost = false
  } else if (state === 'reconnecting') {
    // 4001: the session was signed out or replaced (a sign-in in another tab): this page is done.
    if (detail.code === 4001) {
      sessionEnded()
      return
    }
    if (!lost) addNotice('Connection lost — reconnecting…')
    lost = true
    conn.dataset.state = 'reconnecting'
    const at = Date.now() + detail.delay
    const tick = () => {
      const seconds = Math.ceil((at - Date.now()) / 1000)
      text.textContent = seconds > 0 ? `Reconnecting in ${seconds}s…` : 'Reconnecting…'
    }
    tick()
    countdown = setInterval(tick, 250)
    // A socket refused before it opened may mean we were signed out: let the page check (not
    // offline, where the request could only fail, with an error in the console).
    if (navigator.onLine !== false) checkSignedIn()
  } else {
    conn.dataset.state = 'connecting'
    text.textContent = 'Connecting…'
  }
  $('chat-send').disabled = state !== 'open'
  $('deploy-start').disabled = state !== 'open'
  $('chat-input').placeholder = state === 'open' ? `Message #${room}` : 'Reconnecting…'
}

let checking = false
async function checkSignedIn () {
  if (checking) return
  checking = true
  try {
    const now = await (await fetch('/api/me', { cache: 'no-store' })).json()
    // Signed out, or signed in as someone else in another tab: not this page's user any more.
    if (now.user === null || now.user.id !== me?.id) sessionEnded()
  } catch {
    // The server is down: the client keeps retrying.
  } finally {
    checking = false
  }
}

function sessionEnded () {
  client.close()
  clearInterval(countdown)
  showSignIn('Your session ended — sign in again.')
}

// ---- helpers ------------------------------------------------------------------------------------

function el (tag, className, text) {
  const node = document.createElement(tag)
  if (className) node.className = className
  if (text !== undefined) node.textContent = text
  return node
}

function hue (name) {
  let h = 0
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) % 360
  return h
}

function avatar (name) {
  const node = el('span', 'avatar', initial(name))
  node.style.setProperty('--hue', hue(name))
  return node
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' })
const shortTime = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' })
const dateFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' })

// ---- chat ---------------------------------------------------------------------------------------

const DEFAULT_ROOMS = ['lobby', 'random', 'ops']
let room = 'lobby'
let chat
let deploys
let people = null

/** What the server accepts as a room: lowercase letters, digits and dashes. */
function roomName (raw) {
  return raw.trim().toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+/, '').slice(0, 30).replace(/-+$/, '')
}

function renderRooms () {
  const nav = $('rooms')
  nav.replaceChildren()
  for (const name of new Set([...DEFAULT_ROOMS, room])) {
    const tab = el('button', 'room' + (name === room ? ' active' : ''), `#${name}`)
    tab.type = 'button'
    tab.dataset.room = name
    tab.setAttribute('aria-pressed', String(name === room))
    tab.onclick = () => joinRoom(name)
    nav.append(tab)
  }
}

function addNotice (text) {
  appendItem(el('li', 'notice', text))
}

/**
 * A chat line, placed by its position in the room's history: `epoch:offset` keys it, so a line the
 * history call returns and the live stream brings too is shown once, where it belongs.
 */
function addMessage ({ user, userId, text, at, via }, offset, epoch) {
  const list = $('messages')
  const key = `${epoch}:${offset}`
  if (list.querySelector(`[data-key="${CSS.escape(key)}"]`) !== null) return
  const mine = (userId ?? user) === myId()
  const item = el('li', 'message' + (mine ? ' mine' : ''))
  item.dataset.key = key
  item.dataset.epoch = epoch
  item.dataset.offset = String(offset)
  const body = el('div', 'bubble')
  const meta = el('div', 'meta')
  meta.append(el('span', 'author', user), el('span', 'time', shortTime.format(at)))
  if (via) meta.append(el('span', 'via', `via ${via}`))
  body.append(meta, el('div', 'text', text))
  item.append(avatar(user), body)
  const later = [...list.querySelectorAll(`.message[data-epoch="${CSS.escape(epoch)}"]`)].find(node => Number(node.dataset.offset) > offset)
  appendItem(item, later)
}

function appendItem (item, before) {
  const list = $('messages')
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40
  if (before) list.insertBefore(item, before)
  else list.append(item)
  while (list.children.length > 200) list.firstElementChild.remove()
  if (atBottom) list.scrollTop = list.scrollHeight
}

function renderPresence (entries) {
  // One entry per person (id → name), however many tabs each has open; two people may share a name.
  const now = new Map(entries.map(({ info }) => [info.id ?? info.name, info.name]))
  // After the first list, changes are announced in the chat.
  if (people !== null) {
    for (const [id, name] of now) if (!people.has(id) && id !== myId()) addNotice(`${name} joined`)
    for (const [id, name] of people) if (!now.has(id)) addNotice(`${name} left`)
  }
  people = now
  const list = $('presence')
  list.replaceChildren(...[...now].sort(([, a], [, b]) => a.localeCompare(b)).map(([id, name]) => {
    const item = el('li', 'person' + (id === myId() ? ' me' : ''), name)
    item.prepend(avatar(name))
    return item
  }))
}

/** Who this page's user is (see the server's sign-in). */
function myId () {
  return me.id ?? me.name
}

/** The room's last lines, merged with what is already shown (on arrival, and after a gap). */
async function loadHistory (sub) {
  try {
    const { epoch, messages } = await client.call('history', { room: sub.group.slice('room.'.length) })
    if (chat !== sub) return
    for (const message of messages) addMessage(message, message.offset, epoch)
  } catch (err) {
    addNotice(`Could not load the room's history (${err.code}).`)
  }
}

function joinRoom (name) {
  if (name === room && chat !== undefined) return
  room = name
  chat?.leave()
  people = null
  $('messages').replaceChildren()
  $('presence').replaceChildren()
  renderRooms()
  const sub = client.join(`room.${room}`, {
    message: (data, { offset, epoch }) => addMessage(data, offset, epoch),
    presence: renderPresence,
    gap: () => {
      addNotice('Some messages may be missing — reloading the room.')
      loadHistory(sub)
    }
  })
  chat = sub
  sub.ready.then(() => {
    addNotice(`You joined #${name}`)
    loadHistory(sub)
  }, err => addNotice(`Could not join #${name} (${err.code}).`))
}

$('chat-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const input = $('chat-input')
  const text = input.value.trim()
  if (text === '') {
    // Enter on an empty box does nothing; a line of only spaces is not sent, and the page says why.
    if (input.value !== '') addNotice('Not sent: the message has only spaces.')
    input.value = ''
    return
  }
  input.value = ''
  post(room, text).catch(err => {
    input.value = text
    addNotice(`Not sent: ${err.message}`)
  })
})

/**
 * Posts a line once. A reply lost with the connection does not say whether the line went in: once
 * the page is connected again it asks once more, with the same nonce, and the server posts it
 * only if the room does not have it already.
 */
async function post (room, text) {
  const nonce = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`
  try {
    return await client.call('post', { room, text, nonce })
  } catch (err) {
    if (err.code !== 'FST_CHANNELS_CONNECTION_LOST') throw err
  }
  await connected()
  return await client.call('post', { room, text, nonce, retry: true })
}

function connected () {
  if (client.state === 'open') return Promise.resolve()
  return new Promise(resolve => {
    const off = client.on('state', state => {
      if (state !== 'open') return
      off()
      resolve()
    })
  })
}

$('room-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const input = $('room-input')
  const asked = input.value.trim()
  const name = roomName(asked)
  input.value = ''
  if (name === '') {
    if (asked !== '') addNotice(`"${asked}" has no letters or digits: room names use lowercase letters, digits and dashes.`)
    return
  }
  joinRoom(name)
  if (name !== asked) addNotice(`Room names use lowercase letters, digits and dashes: "${asked}" is #${name}.`)
})

// ---- clock --------------------------------------------------------------------------------------

function onTick ({ now, server }) {
  lastTick = Date.now()
  $('clock-time').textContent = timeFormat.format(now)
  $('clock-date').textContent = dateFormat.format(now)
  $('clock-server').textContent = `from ${server}`
}

// The page follows the clock of the process that answered /api/me. If that process goes away
// (scaled down, not restarted), its ticks stop, whichever process holds the socket: after a few
// silent seconds the page asks /api/me again and follows the clock of a process that answers.
let clockSub
let lastTick = 0
let askingClock = false

function joinClock (group) {
  clockSub?.leave()
  lastTick = Date.now()
  clockSub = client.join(group, { message: onTick })
}

async function checkClock () {
  if (askingClock || client?.state !== 'open' || Date.now() - lastTick < 3500) return
  askingClock = true
  try {
    const now = await (await fetch('/api/me', { cache: 'no-store' })).json()
    lastTick = Date.now()
    if (now.clock !== info.clock) {
      info = { ...info, clock: now.clock }
      joinClock(now.clock)
    }
  } catch {
    // Nobody answers: the connection's own state says so; asked again at the next check.
  } finally {
    askingClock = false
  }
}

setInterval(checkClock, 1000)

// ---- deploys ------------------------------------------------------------------------------------

const jobs = new Map()

// Where a progress event stands among those shown: offsets count within an epoch, and an epoch
// seen later (the history was lost, by a restart of the in-memory layer) comes after.
const epochs = []
function place (epoch, offset) {
  if (!epochs.includes(epoch)) epochs.push(epoch)
  return { era: epochs.indexOf(epoch), offset }
}
function isAfter (a, b) {
  return a.era > b.era || (a.era === b.era && a.offset > b.offset)
}
function placeOf (node, name) {
  return { era: Number(node.dataset[`${name}Era`]), offset: Number(node.dataset[`${name}Offset`]) }
}

// A deploy's card, made by its first event; cards are ordered newest first by that event's place
// (progress read back from the history may arrive after a live event of a newer deploy).
function jobNode (progress, at) {
  let job = jobs.get(progress.jobId)
  if (job !== undefined) return job
  const item = el('li', 'job')
  item.dataset.job = progress.jobId
  item.dataset.firstEra = String(at.era)
  item.dataset.firstOffset = String(at.offset)
  const head = el('div', 'job-head')
  const title = el('div', 'job-title')
  title.append(el('strong', '', `Deploy ${progress.jobId}`),
    el('div', 'muted small', `${progress.version} to ${progress.servers} server${progress.servers === 1 ? '' : 's'} · by ${progress.by}`))
  const status = el('span', 'badge')
  head.append(title, status)
  const bar = el('div', 'bar')
  bar.setAttribute('role', 'progressbar')
  bar.setAttribute('aria-valuemin', '0')
  bar.setAttribute('aria-valuemax', '100')
  const fill = el('div', 'bar-fill')
  bar.append(fill)
  const foot = el('div', 'job-foot muted small')
  item.append(head, bar, foot)
  const older = [...$('jobs').children].find(node => isAfter(at, placeOf(node, 'first')))
  $('jobs').insertBefore(item, older ?? null)
  $('jobs-empty').hidden = true
  job = { item, status, bar, fill, foot, latest: undefined }
  jobs.set(progress.jobId, job)
  return job
}

/**
 * One progress event, live or read back from the history: keyed by its place, so an event is
 * shown once whichever way it came first, its log line goes in order, and a card shows its
 * deploy's latest event.
 */
function onDeploy (event, offset, epoch) {
  const at = place(epoch, offset)
  const log = $('deploy-log')
  if (log.querySelector(`[data-at-era="${at.era}"][data-at-offset="${at.offset}"]`) !== null) return
  const job = jobNode(event, at)
  if (job.latest === undefined || isAfter(at, job.latest)) {
    job.latest = at
    job.heardAt = Date.now()
    job.item.dataset.status = event.status
    job.item.dataset.pct = String(event.pct)
    job.status.textContent = event.status === 'succeeded' ? 'Done' : event.status === 'failed' ? 'Stopped' : 'Running'
    job.status.className = `badge badge-${event.status}`
    job.fill.style.width = `${event.pct}%`
    job.bar.setAttribute('aria-valuenow', String(event.pct))
    job.foot.textContent = `${event.done} of ${event.servers} servers · ${event.pct}% · worker ${event.worker}`
  }

  const line = el('li', 'log-line')
  line.dataset.atEra = String(at.era)
  line.dataset.atOffset = String(at.offset)
  const tag = el('span', 'log-job', event.jobId)
  tag.style.setProperty('--hue', hue(event.jobId))
  line.append(el('time', 'log-time', timeFormat.format(event.at)), tag, el('span', 'log-text', event.line))
  // With several processes on Redis, steps of one deploy run wherever a worker is free: show where.
  if (event.worker !== info.server) line.append(el('span', 'log-worker', `on ${event.worker}`))
  const later = [...log.children].find(node => isAfter(placeOf(node, 'at'), at))
  log.insertBefore(line, later ?? null)
  while (log.children.length > 300) log.firstElementChild.remove()
  if (later === undefined) log.scrollTop = log.scrollHeight
}

// The deploys' recent progress, on arrival (a reloaded page shows the deploys under way and done)
// and after a gap; merged with what came live by offset.
async function loadDeploys (sub) {
  try {
    const { epoch, messages } = await client.call('deploys', {})
    if (deploys !== sub) return
    for (const message of messages) onDeploy(message, message.offset, epoch)
  } catch (err) {
    console.warn('deploys not loaded:', err)
  }
}

// Progress the deploys group could not replay (its history is gone): say so rather than show a
// frozen bar, until the history read back shows newer progress.
function markInterrupted (stillFrom = Infinity) {
  for (const job of jobs.values()) {
    if (job.item.dataset.status === 'running' && job.heardAt < stillFrom) {
      job.item.dataset.status = 'interrupted'
      job.status.textContent = 'No updates'
      job.status.className = 'badge badge-interrupted'
    }
  }
}

// A step takes well under a second. A deploy silent for 10 s lost its worker process mid-step
// (delivery is at most once: the step it had taken is gone with it): it will not move again.
setInterval(() => { markInterrupted(Date.now() - 10_000) }, 2000)

$('deploy-form').addEventListener('submit', (event) => {
  event.preventDefault()
  $('deploy-error').hidden = true
  client.call('deploy', { servers: Number($('deploy-servers').value) }).catch(err => {
    $('deploy-error').textContent = err.code === 'FST_CHANNELS_INVALID_ARGS' ? 'Choose between 1 and 12 servers.' : err.message
    $('deploy-error').hidden = false
  })
})

// ---- views --------------------------------------------------------------------------------------

function showSignIn (message) {
  $('app-view').hidden = true
  $('account').hidden = true
  $('signin-view').hidden = false
  $('conn').hidden = true
  const error = $('signin-error')
  error.textContent = message ?? ''
  error.hidden = !message
  $('signin-name').focus()
}

function showApp (user) {
  me = user
  $('signin-view').hidden = true
  $('app-view').hidden = false
  $('account').hidden = false
  $('conn').hidden = false
  $('user-name').textContent = user.name
  const badge = $('avatar')
  badge.textContent = initial(user.name)
  badge.style.setProperty('--hue', hue(user.name))
  client = new ChannelsClient('/ws/app')
  client.on('state', onState)
  onState(client.state, {})
  client.on('error', err => console.warn('channels client:', err))
  joinClock(info.clock)
  const sub = client.join('deploys', {
    message: (event, { offset, epoch }) => onDeploy(event, offset, epoch),
    gap: () => {
      markInterrupted()
      loadDeploys(sub)
    }
  })
  deploys = sub
  sub.ready.then(() => loadDeploys(sub), err => console.warn('deploys not joined:', err))
  joinRoom(roomName(new URLSearchParams(location.search).get('room') ?? '') || 'lobby')
}

async function start () {
  try {
    info = await (await fetch('/api/me', { cache: 'no-store' })).json()
    $('server-label').textContent = info.server
    if (info.user === null) {
      const error = new URLSearchParams(location.search).get('error')
      showSignIn(error === 'name' ? 'Please enter a name.' : undefined)
    } else {
      showApp(info.user)
    }
  } catch {
    $('conn').dataset.state = 'reconnecting'
    $('conn-text').textContent = 'Server unreachable — retrying…'
    setTimeout(start, 2000)
  }
}

start()

// The first character as a reader sees it: a name may begin outside the Basic Multilingual Plane
// (𠮷田, 𝒜da), which slice(0, 1) would cut in half.
function initial (name) {
  return ([...name.trim()][0] ?? '').toUpperCase()
}
