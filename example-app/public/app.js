// The example's page: three sockets (chat, clock, deploys), each reconnecting with backoff.
const $ = (id) => document.getElementById(id)

/**
 * A WebSocket that comes back by itself: after a close it waits 0.5 s, 1 s, 2 s… (at most 10 s,
 * with jitter so a restarted server is not hit by every page at once) and tries again.
 */
class LiveSocket {
  constructor (path, { onMessage, onChange, onRefused }) {
    this.path = path
    this.handlers = { onMessage, onChange, onRefused }
    this.state = 'connecting'
    this.attempt = 0
    this.retryAt = 0
    this.stopped = false
    this.connect()
  }

  connect () {
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${this.path}`
    const ws = new WebSocket(url)
    let opened = false
    this.ws = ws
    this.#set('connecting')
    ws.onopen = () => {
      opened = true
      this.attempt = 0
      this.#set('open')
    }
    ws.onmessage = (event) => this.handlers.onMessage(JSON.parse(event.data), this)
    ws.onclose = () => {
      if (this.stopped || ws !== this.ws) return
      // A handshake refused before opening may mean we were signed out: let the page check.
      if (!opened) this.handlers.onRefused?.(this)
      if (this.stopped) return
      const delay = Math.min(10_000, 500 * 2 ** this.attempt++) * (0.75 + Math.random() / 2)
      this.retryAt = Date.now() + delay
      this.#set('waiting')
      this.timer = setTimeout(() => this.connect(), delay)
    }
  }

  send (content) {
    if (this.state !== 'open') return false
    this.ws.send(JSON.stringify(content))
    return true
  }

  stop () {
    this.stopped = true
    clearTimeout(this.timer)
    this.ws?.close(1000)
    this.#set('closed')
  }

  #set (state) {
    this.state = state
    this.handlers.onChange?.(this)
  }
}

// ---- connection indicator ---------------------------------------------------------------------

const sockets = new Set()
let countdown

function renderConnection () {
  const list = [...sockets]
  const conn = $('conn')
  const text = $('conn-text')
  clearTimeout(countdown)
  if (list.length === 0) return
  if (list.every(s => s.state === 'open')) {
    conn.dataset.state = 'connected'
    text.textContent = 'Connected'
  } else if (list.some(s => s.state === 'waiting')) {
    conn.dataset.state = 'reconnecting'
    const next = Math.min(...list.filter(s => s.state === 'waiting').map(s => s.retryAt))
    const seconds = Math.max(0, Math.ceil((next - Date.now()) / 1000))
    text.textContent = seconds > 0 ? `Reconnecting in ${seconds}s…` : 'Reconnecting…'
    countdown = setTimeout(renderConnection, 250)
  } else {
    conn.dataset.state = 'connecting'
    text.textContent = 'Connecting…'
  }
}

function open (path, onMessage, onChange) {
  const socket = new LiveSocket(path, {
    onMessage,
    onChange: (s) => { renderConnection(); onChange?.(s) },
    onRefused: checkSignedIn
  })
  sockets.add(socket)
  return socket
}

function close (socket) {
  if (socket === undefined) return
  sockets.delete(socket)
  socket.stop()
  renderConnection()
}

let checking = false
async function checkSignedIn () {
  if (checking) return
  checking = true
  try {
    const me = await (await fetch('/api/me', { cache: 'no-store' })).json()
    if (me.user === null) {
      for (const socket of [...sockets]) close(socket)
      showSignIn('Your session ended — sign in again.')
    }
  } catch {
    // The server is down: the sockets keep retrying.
  } finally {
    checking = false
  }
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
  const node = el('span', 'avatar', name.trim().slice(0, 1).toUpperCase())
  node.style.setProperty('--hue', hue(name))
  return node
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' })
const shortTime = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' })
const dateFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' })

// ---- chat ---------------------------------------------------------------------------------------

const DEFAULT_ROOMS = ['lobby', 'random', 'ops']
let me = null
let room = 'lobby'
let chat

/** What the server accepts as a room: lowercase letters, digits and dashes. */
function roomName (raw) {
  return raw.trim().toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+/, '').slice(0, 30).replace(/-+$/, '')
}

function renderRooms () {
  const nav = $('rooms')
  nav.replaceChildren()
  const rooms = [...new Set([...DEFAULT_ROOMS, room])]
  for (const name of rooms) {
    const tab = el('button', 'room' + (name === room ? ' active' : ''), `#${name}`)
    tab.type = 'button'
    tab.dataset.room = name
    tab.setAttribute('aria-pressed', String(name === room))
    tab.onclick = () => joinRoom(name)
    nav.append(tab)
  }
}

function addNotice (text) {
  const item = el('li', 'notice', text)
  appendMessage(item)
}

function addMessage ({ user, text, at, via }) {
  const mine = user === me.name
  const item = el('li', 'message' + (mine ? ' mine' : ''))
  const body = el('div', 'bubble')
  const meta = el('div', 'meta')
  meta.append(el('span', 'author', user), el('span', 'time', shortTime.format(at)))
  if (via) meta.append(el('span', 'via', `via ${via}`))
  body.append(meta, el('div', 'text', text))
  item.append(avatar(user), body)
  appendMessage(item)
}

function appendMessage (item) {
  const list = $('messages')
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40
  list.append(item)
  while (list.children.length > 200) list.firstElementChild.remove()
  if (atBottom) list.scrollTop = list.scrollHeight
}

function renderComposer () {
  const ready = chat?.state === 'open'
  $('chat-send').disabled = !ready
  $('chat-input').placeholder = ready ? `Message #${room}` : 'Reconnecting…'
}

function joinRoom (name) {
  if (name === room && chat !== undefined) return
  room = name
  close(chat)
  $('messages').replaceChildren()
  renderRooms()
  chatState = 'new'
  chat = open(`/ws/chat/${encodeURIComponent(room)}`, onChatMessage, onChatState)
}

// 'new' until the room's first hello, 'open' while connected, 'lost' between a drop and the next hello.
let chatState = 'new'

function onChatState (socket) {
  renderComposer()
  if (socket.state === 'waiting' && chatState === 'open') {
    chatState = 'lost'
    addNotice('Connection lost — reconnecting…')
  }
}

function onChatMessage (event) {
  if (event.type === 'hello') {
    addNotice(chatState === 'lost' ? `Reconnected to #${event.room}` : `You joined #${event.room}`)
    chatState = 'open'
  } else if (event.type === 'message') {
    addMessage(event)
  } else if (event.type === 'join') {
    addNotice(`${event.user} joined`)
  } else if (event.type === 'leave') {
    addNotice(`${event.user} left`)
  }
}

$('chat-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const input = $('chat-input')
  const text = input.value.trim()
  if (text !== '' && chat.send({ text })) input.value = ''
})

$('room-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const input = $('room-input')
  const name = roomName(input.value)
  input.value = ''
  if (name !== '') joinRoom(name)
})

// ---- clock --------------------------------------------------------------------------------------

function onTick ({ now, server }) {
  $('clock-time').textContent = timeFormat.format(now)
  $('clock-date').textContent = dateFormat.format(now)
  $('clock-server').textContent = `from ${server}`
}

// ---- deploys ------------------------------------------------------------------------------------

const jobs = new Map()
let serverLabel = ''
let deploy

function jobNode (progress) {
  let job = jobs.get(progress.jobId)
  if (job !== undefined) return job
  const item = el('li', 'job')
  item.dataset.job = progress.jobId
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
  $('jobs').prepend(item)
  $('jobs-empty').hidden = true
  job = { item, status, bar, fill, foot }
  jobs.set(progress.jobId, job)
  return job
}

function onDeploy (event) {
  if (event.type === 'error') {
    $('deploy-error').textContent = event.message
    $('deploy-error').hidden = false
    return
  }
  $('deploy-error').hidden = true
  const job = jobNode(event)
  job.item.dataset.status = event.status
  job.item.dataset.pct = String(event.pct)
  job.status.textContent = event.status === 'succeeded' ? 'Done' : 'Running'
  job.status.className = `badge badge-${event.status}`
  job.fill.style.width = `${event.pct}%`
  job.bar.setAttribute('aria-valuenow', String(event.pct))
  job.foot.textContent = `${event.done} of ${event.servers} servers · ${event.pct}% · worker ${event.worker}`

  const line = el('li', 'log-line')
  const tag = el('span', 'log-job', event.jobId)
  tag.style.setProperty('--hue', hue(event.jobId))
  line.append(el('time', 'log-time', timeFormat.format(event.at)), tag, el('span', 'log-text', event.line))
  // With several processes on Redis, steps of one deploy run wherever a worker is free: show where.
  if (event.worker !== serverLabel) line.append(el('span', 'log-worker', `on ${event.worker}`))
  const log = $('deploy-log')
  log.append(line)
  while (log.children.length > 300) log.firstElementChild.remove()
  log.scrollTop = log.scrollHeight
}

// Progress that happened while we were away is not replayed: say so rather than show a frozen bar.
function markInterrupted () {
  for (const job of jobs.values()) {
    if (job.item.dataset.status === 'running') {
      job.item.dataset.status = 'interrupted'
      job.status.textContent = 'No updates'
      job.status.className = 'badge badge-interrupted'
    }
  }
}

$('deploy-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const servers = Number($('deploy-servers').value)
  if (!deploy.send({ action: 'start', servers })) {
    $('deploy-error').textContent = 'Not connected — the deploy was not started.'
    $('deploy-error').hidden = false
  }
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
  badge.textContent = user.name.slice(0, 1).toUpperCase()
  badge.style.setProperty('--hue', hue(user.name))
  open('/ws/clock', onTick)
  deploy = open('/ws/deploy', onDeploy, (socket) => {
    $('deploy-start').disabled = socket.state !== 'open'
    if (socket.state === 'waiting') markInterrupted()
  })
  joinRoom(roomName(new URLSearchParams(location.search).get('room') ?? '') || 'lobby')
}

async function start () {
  try {
    const info = await (await fetch('/api/me', { cache: 'no-store' })).json()
    serverLabel = info.server
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
