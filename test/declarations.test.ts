/**
 * The declarations the package ships (`dist/*.d.ts`, which `npm test` builds first), as an app's
 * compiler reads them: an app importing the three entry points by the package's name is compiled
 * with `skipLibCheck: false` under each module resolution an ESM app may use. `types.test.ts`
 * checks the API's types against the sources; this checks that what is shipped compiles at all.
 */
import t from 'tap'
import ts from 'typescript'
import path from 'node:path'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const dist = path.join(root, 'dist')

const app = `
import fastifyChannels, { JsonWebsocketConsumer, InvalidOptionError, type LayerMessage } from 'fastify-channels'
import { WebsocketCommunicator } from 'fastify-channels/testing'
import { ChannelsClient } from 'fastify-channels/client'

class Chat extends JsonWebsocketConsumer {
  async chatMessage (event: LayerMessage): Promise<void> { await this.sendJson(event) }
}
// The error classes keep their type: an instance has its code, not any.
const code: 'FST_CHANNELS_INVALID_OPTION' = new InvalidOptionError('x').code
// @ts-expect-error an instance is not a number
const notANumber: number = new InvalidOptionError('x')
void fastifyChannels; void Chat; void WebsocketCommunicator; void ChannelsClient; void code; void notANumber
`

const resolutions: Record<string, ts.CompilerOptions> = {
  nodenext: { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext },
  node16: { module: ts.ModuleKind.Node16, moduleResolution: ts.ModuleResolutionKind.Node16 },
  bundler: { module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler }
}

/** The errors of one compile of `app`, in the app and in the shipped declarations. */
function errorsUnder (resolution: ts.CompilerOptions): string[] {
  const file = path.join(root, 'test', 'declarations-fixture-app.ts')
  const options: ts.CompilerOptions = {
    ...resolution,
    target: ts.ScriptTarget.ES2022,
    strict: true,
    noEmit: true,
    skipLibCheck: false,
    types: ['node']
  }
  const host = ts.createCompilerHost(options)
  const getSourceFile = host.getSourceFile.bind(host)
  host.getSourceFile = (fileName, languageVersion, ...rest) => fileName === file
    ? ts.createSourceFile(fileName, app, languageVersion)
    : getSourceFile(fileName, languageVersion, ...rest)
  const fileExists = host.fileExists.bind(host)
  host.fileExists = fileName => fileName === file || fileExists(fileName)
  const program = ts.createProgram([file], options, host)
  return ts.getPreEmitDiagnostics(program)
    .filter(d => d.file === undefined || d.file.fileName === file || d.file.fileName.startsWith(dist + path.sep))
    .map(d => `${d.file === undefined ? '' : path.relative(root, d.file.fileName) + ': '}${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`)
}

t.test('the shipped declarations compile for an app, under every ESM module resolution', async t => {
  t.ok(existsSync(path.join(dist, 'index.d.ts')), 'dist is built (npm test builds it first)')
  for (const [name, resolution] of Object.entries(resolutions)) {
    t.same(errorsUnder(resolution), [], `moduleResolution ${name}: no error in the app or in dist/*.d.ts`)
  }
})
