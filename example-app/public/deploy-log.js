// The read-only deploy log: one EventSource. The browser reconnects by itself (after the `retry`
// the server set) and sends the last event id it saw as Last-Event-ID; the server answers with
// what was missed, or with a `reset` and the history when it cannot.
const $ = (id) => document.getElementById(id)
const jobs = new Map() // jobId → its <li>
let reconnects = 0
let opened = false

function setState (state, text) {
  $('state').dataset.state = state
  $('state').textContent = text
}

function job (progress) {
  let item = jobs.get(progress.jobId)
  if (item === undefined) {
    item = document.createElement('li')
    item.className = 'job'
    item.dataset.job = progress.jobId
    item.innerHTML = '<div class="job-head"><strong></strong><span class="job-by muted"></span><span class="job-pct"></span></div>' +
      '<div class="bar-track"><div class="bar-fill"></div></div>'
    $('jobs').prepend(item)
    jobs.set(progress.jobId, item)
    $('no-jobs').hidden = true
  }
  item.dataset.pct = String(progress.pct)
  item.dataset.status = progress.status
  item.querySelector('strong').textContent = `${progress.version} · ${progress.done}/${progress.servers} servers`
  item.querySelector('.job-by').textContent = `by ${progress.by}`
  item.querySelector('.job-pct').textContent = `${progress.pct}%`
  item.querySelector('.bar-fill').style.width = `${progress.pct}%`
}

function logLine (progress) {
  const line = document.createElement('li')
  line.className = 'line'
  line.dataset.offset = String(progress.offset)
  const time = new Date(progress.at).toLocaleTimeString()
  line.textContent = `${time}  ${progress.version}  ${progress.line}  (${progress.worker})`
  $('log').append(line)
  line.scrollIntoView({ block: 'nearest' })
}

const source = new EventSource('/events/deploys')

source.onopen = () => {
  if (opened) reconnects++
  opened = true
  $('reconnects').textContent = String(reconnects)
  setState('open', 'Live')
}

source.onerror = () => {
  if (source.readyState === EventSource.CLOSED) {
    // Not a dropped stream but a refusal (401): an EventSource does not retry those.
    setState('closed', 'Not signed in')
    $('signin-hint').hidden = false
  } else {
    setState('reconnecting', 'Reconnecting…')
  }
}

source.addEventListener('reset', () => {
  // The server could not resume from our last event (first visit, or its history was lost).
  if (jobs.size > 0) {
    $('reset-note').textContent = 'The server lost its history (it restarted?): the log starts over.'
    $('reset-note').hidden = false
  }
  jobs.clear()
  $('jobs').replaceChildren()
  $('log').replaceChildren()
  $('no-jobs').hidden = false
})

source.addEventListener('progress', (event) => {
  const progress = JSON.parse(event.data)
  job(progress)
  logLine(progress)
})
