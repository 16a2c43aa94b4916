/**
 * Fixtures that run as separate processes import the built package (`fastify-channels` resolves
 * to dist/ through the package's self-reference), as users do. This makes sure dist/ is not older
 * than lib/, building once when it is; a lock keeps parallel test files from building together.
 */
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdirSync, readdirSync, rmdirSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')

function newest (dir: string, ext: string): number {
  let latest = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name)
    if (entry.isDirectory()) latest = Math.max(latest, newest(full, ext))
    else if (entry.name.endsWith(ext)) latest = Math.max(latest, statSync(full).mtimeMs)
  }
  return latest
}

function oldestOutput (): number {
  try {
    return Math.min(statSync(path.join(root, 'dist', 'index.js')).mtimeMs, statSync(path.join(root, 'dist', 'layers', 'redis.js')).mtimeMs)
  } catch {
    return 0
  }
}

function stale (): boolean {
  return oldestOutput() < newest(path.join(root, 'lib'), '.ts')
}

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

export async function ensureBuilt (): Promise<void> {
  if (!stale()) return
  const lock = path.join(tmpdir(), `fastify-channels-build-${createHash('sha1').update(root).digest('hex').slice(0, 12)}.lock`)
  const deadline = Date.now() + 120_000
  for (;;) {
    try {
      mkdirSync(lock)
      break
    } catch {
      if (Date.now() > deadline) throw new Error(`could not take ${lock}; remove it if no build is running`)
      await sleep(200)
    }
  }
  try {
    if (!stale()) return
    await new Promise<void>((resolve, reject) => {
      execFile('npm', ['run', 'build'], { cwd: root, timeout: 120_000 }, (err, stdout, stderr) =>
        err === null ? resolve() : reject(new Error(`npm run build failed:\n${stdout}${stderr}`)))
    })
  } finally {
    rmdirSync(lock)
  }
}
