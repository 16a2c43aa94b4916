/**
 * A real nginx (Debian's package) run as a child process with its own prefix, configured from
 * example-app/nginx.conf — the configuration the README documents — with the ports (and, where a
 * test asks, the read timeout) of the test. Stopped in teardown. The bench starts it the same way
 * (bench/lib/nginx.js does both).
 */
import type { Test } from 'tap'
import { execFileSync } from 'node:child_process'
// @ts-expect-error a plain ES module script, without declarations
import { startNginx as launch } from '../../bench/lib/nginx.js'

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
  const nginx = await launch(upstreams, overrides) as Nginx & { stop: () => Promise<void> }
  t.teardown(nginx.stop)
  return { port: nginx.port, url: nginx.url, config: nginx.config }
}
