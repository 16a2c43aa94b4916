import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'

/** A child Node process whose output is kept line by line, for multi-process tests. */
export interface NodeProcess {
  child: ChildProcess
  /** stdout and stderr lines so far. */
  lines: string[]
  /** Resolves with the first line (already seen or to come) matching `pattern`; rejects after `ms` or on exit. */
  waitFor (pattern: RegExp, ms?: number): Promise<string>
  /** SIGTERM, then SIGKILL after `ms`; resolves with the exit code once the process is gone. */
  stop (ms?: number): Promise<number | null>
  readonly exited: Promise<number | null>
}

export function spawnNode (args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string): NodeProcess {
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  const listeners = new Set<() => void>()
  let exitCode: number | null | undefined
  const exited = new Promise<number | null>(resolve => child.once('exit', code => {
    exitCode = code
    resolve(code)
    for (const wake of listeners) wake()
  }))
  for (const stream of [child.stdout, child.stderr]) {
    let rest = ''
    stream?.setEncoding('utf8')
    stream?.on('data', (chunk: string) => {
      const parts = (rest + chunk).split('\n')
      rest = parts.pop() ?? ''
      lines.push(...parts)
      for (const wake of listeners) wake()
    })
  }

  function waitFor (pattern: RegExp, ms = 30_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => finish(new Error(`no output line matching ${String(pattern)} within ${ms} ms; output:\n${lines.slice(-30).join('\n')}`)), ms)
      function check (): void {
        const line = lines.find(l => pattern.test(l))
        if (line !== undefined) finish(undefined, line)
        else if (exitCode !== undefined) finish(new Error(`process exited (${String(exitCode)}) before printing ${String(pattern)}; output:\n${lines.slice(-30).join('\n')}`))
      }
      function finish (err?: Error, line?: string): void {
        clearTimeout(timer)
        listeners.delete(check)
        if (err !== undefined) reject(err)
        else resolve(line as string)
      }
      listeners.add(check)
      check()
    })
  }

  async function stop (ms = 10_000): Promise<number | null> {
    if (exitCode !== undefined) return exitCode
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), ms)
    try {
      return await exited
    } finally {
      clearTimeout(timer)
    }
  }

  return { child, lines, waitFor, stop, exited }
}

/** A loopback port that was free a moment ago. */
export function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port')))
    })
  })
}
