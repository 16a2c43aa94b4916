/**
 * A real nginx (Debian's package) run as a child process with its own prefix, configured from
 * example-app/nginx.conf — the configuration the README documents — with the ports (and, where a
 * test asks, the read timeout) of the test. Stopped in teardown.
 */
import type { Test } from 'tap'
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort } from './process.js'

const documented = fileURLToPath(new URL('../../example-app/nginx.conf', import.meta.url))

export interface Nginx {
  port: number
  url: string
  /** The configuration it runs. */
  config: string
}

/** Whether nginx is installed; a test that needs it fails (never skips) when it is not. */
export function requireNginx (t: Test): boolean {
  try {
    execFileSync('nginx', ['-v'], { stdio: 'ignore' })
    return true
  } catch {
    t.fail('nginx is not installed: apt-get install nginx (the CI script does)' + (process.env.CI === 'true' ? ' — CI=true requires it' : ''))
    return false
  }
}

export async function startNginx (t: Test, upstreams: number[], overrides: { readTimeout?: string } = {}): Promise<Nginx> {
  const port = await freePort()
  const prefix = mkdtempSync(path.join(tmpdir(), 'fc-nginx-'))
  mkdirSync(path.join(prefix, 'tmp'))
  // The test's ports in place of the documented ones, each with the documented server parameters.
  let config = readFileSync(documented, 'utf8')
    .replace(/upstream app \{[^}]*\}/, block => {
      const parameters = /server 127\.0\.0\.1:\d+([^;]*);/.exec(block)?.[1] ?? ''
      return `upstream app {\n${upstreams.map(p => `    server 127.0.0.1:${p}${parameters};`).join('\n')}\n  }`
    })
    .replace(/listen 127\.0\.0\.1:8080;/, `listen 127.0.0.1:${port};`)
  if (overrides.readTimeout !== undefined) config = config.replace(/proxy_read_timeout \S+;/, `proxy_read_timeout ${overrides.readTimeout};`)
  writeFileSync(path.join(prefix, 'nginx.conf'), config)
  const child: ChildProcess = spawn('nginx', ['-p', prefix, '-c', 'nginx.conf', '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr?.on('data', (chunk: Buffer) => { stderr += String(chunk) })
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise(resolve => child.once('exit', resolve))
      child.kill('SIGQUIT')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    }
    rmSync(prefix, { recursive: true, force: true })
  })
  const deadline = Date.now() + 10_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited: ${stderr}`)
    try {
      const res = await fetch(`http://127.0.0.1:${port}/__nginx_probe`)
      await res.body?.cancel()
      break
    } catch {
      if (Date.now() > deadline) throw new Error(`nginx did not answer on ${port}: ${stderr}`)
      await new Promise(resolve => setTimeout(resolve, 50))
    }
  }
  return { port, url: `http://127.0.0.1:${port}`, config }
}
