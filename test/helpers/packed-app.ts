/**
 * The package as a user gets it: `npm pack`, then a fresh ESM app in a temporary directory that
 * installs the tarball next to the packages it names, at the versions this checkout uses.
 */
import type { Test } from 'tap'
import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'

export const run = promisify(execFile)
export const root = resolve(import.meta.dirname, '../..')

export interface PackedApp {
  /** The app's directory: `package.json`, `node_modules/`, and whatever the test writes. */
  dir: string
  /** Paths inside the tarball, as `npm pack` lists them. */
  packed: string[]
  /** What `npm install` printed on stderr (warnings such as EBADENGINE). */
  installLog: string
}

/** The version of `name` this checkout has installed, so the app runs what the tests ran. */
async function installedVersion (name: string): Promise<string> {
  const manifest = JSON.parse(await readFile(join(root, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }
  return manifest.version
}

/** Packs the package and installs it, with `packages` (names only), into a new app; removed at teardown. */
export async function packedApp (t: Test, packages: readonly string[]): Promise<PackedApp> {
  const tmp = await mkdtemp(join(tmpdir(), 'fastify-channels-pack-'))
  t.teardown(() => rm(tmp, { recursive: true, force: true }))
  // --ignore-scripts: `npm test` has just built dist/; rebuilding here would race other test files importing it.
  const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], { cwd: root })
  const [tarball] = JSON.parse(stdout) as Array<{ filename: string, files: Array<{ path: string }> }>
  const dir = join(tmp, 'app')
  await mkdir(dir)
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'fresh-app', private: true, type: 'module' }))
  const specs = await Promise.all(packages.map(async name => `${name}@${await installedVersion(name)}`))
  const { stderr } = await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', join(tmp, tarball.filename), ...specs],
    { cwd: dir, timeout: 240_000 })
  return { dir, packed: tarball.files.map(f => f.path), installLog: stderr }
}
