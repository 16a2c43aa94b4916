// A real nginx (Debian's package) run as a child process with its own prefix, configured from
// example-app/nginx.conf — the configuration the README documents — with the given upstream ports
// (each keeping the documented server parameters), a free listening port and, where asked, another
// read timeout. Used by the bench and, through test/helpers/nginx.ts, by the tests.
import { spawn } from 'node:child_process'
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const documented = fileURLToPath(new URL('../../example-app/nginx.conf', import.meta.url))

/** A loopback port that was free a moment ago. */
function freePort () {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

/** The documented configuration with these ports. */
export function nginxConfig (upstreams, port, { readTimeout } = {}) {
  let config = readFileSync(documented, 'utf8')
    .replace(/upstream app \{[^}]*\}/, block => {
      const parameters = /server 127\.0\.0\.1:\d+([^;]*);/.exec(block)?.[1] ?? ''
      return `upstream app {\n${upstreams.map(p => `    server 127.0.0.1:${p}${parameters};`).join('\n')}\n  }`
    })
    .replace(/listen 127\.0\.0\.1:8080;/, `listen 127.0.0.1:${port};`)
  if (readTimeout !== undefined) config = config.replace(/proxy_read_timeout \S+;/, `proxy_read_timeout ${readTimeout};`)
  return config
}

/**
 * Starts nginx in front of `upstreams`; resolves once it answers, with `{ port, url, config, stop }`.
 * `stop()` ends it (SIGQUIT, then SIGKILL after 5 s) and removes its prefix.
 */
export async function startNginx (upstreams, overrides = {}) {
  const port = await freePort()
  const prefix = mkdtempSync(path.join(tmpdir(), 'fc-nginx-'))
  mkdirSync(path.join(prefix, 'tmp'))
  const config = nginxConfig(upstreams, port, overrides)
  writeFileSync(path.join(prefix, 'nginx.conf'), config)
  const child = spawn('nginx', ['-p', prefix, '-c', 'nginx.conf', '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', chunk => { stderr += String(chunk) })
  // Not installed (ENOENT) or not runnable: reported by the loop below, never an unhandled 'error'.
  let failed
  child.once('error', err => { failed = err })
  const stop = async () => {
    if (failed === undefined && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise(resolve => child.once('exit', resolve))
      child.kill('SIGQUIT')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    }
    rmSync(prefix, { recursive: true, force: true })
  }
  const deadline = Date.now() + 10_000
  for (;;) {
    if (failed !== undefined) {
      await stop()
      throw new Error(`nginx could not be started (${failed.message}); Debian's package: apt-get install nginx`)
    }
    if (child.exitCode !== null) {
      await stop()
      throw new Error(`nginx exited: ${stderr}`)
    }
    try {
      const res = await fetch(`http://127.0.0.1:${port}/__nginx_probe`)
      await res.body?.cancel()
      break
    } catch {
      if (Date.now() > deadline) {
        await stop()
        throw new Error(`nginx did not answer on ${port}: ${stderr}`)
      }
      await new Promise(resolve => setTimeout(resolve, 50))
    }
  }
  return { port, url: `http://127.0.0.1:${port}`, config, stop }
}
