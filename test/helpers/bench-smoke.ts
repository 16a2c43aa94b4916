// Runs a bench script with --smoke, the way CI checks each bench harness end to end. One script
// per test file, so each gets the whole per-file timeout on a loaded machine.
import { execFile } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')

export interface Row { target: string, lost: number | null, dups: number, error?: string, steps: Array<{ frames: number, kind: string, samples: number, p99Windows: number, windows: number }> }

/** Runs a bench script with --smoke; resolves with its exit code and output. */
export function smokeRun (script: string, extra: string[] = []): Promise<{ code: number | null, output: string }> {
  return benchRun(script, ['--smoke', ...extra])
}

/** Runs a bench script with `args`; resolves with its exit code and output. */
export function benchRun (script: string, args: string[]): Promise<{ code: number | null, output: string }> {
  return new Promise(resolve => {
    execFile(process.execPath, [path.join(root, 'bench', script), ...args], {
      cwd: root,
      timeout: 90_000,
      // The bench processes are not under test: keep tap's coverage instrumentation out of them.
      env: { ...process.env, _TAPJS_PROCESSINFO_COVERAGE_: '0' }
    }, (err, stdout, stderr) => resolve({ code: err === null ? 0 : (err as { code?: number }).code ?? null, output: stdout + stderr }))
  })
}
