// Starts the real zajel-server binary on a loopback port (a free one unless given), on the
// embedded store in `dataDir`, serving the built app (dist/) on the same origin. Build both first: `cargo build -p zajel-server` and
// `scripts/build-web.sh` (scripts/test.sh does).
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import path from 'node:path'

const here = import.meta.dirname
const repo = path.resolve(here, '../../..')
const dist = path.resolve(here, '../dist')

export interface Server {
  url: string
  stop(): Promise<void>
  log(): string
}

export function serverBinary(): string {
  if (process.env.ZAJEL_SERVER_BIN) return process.env.ZAJEL_SERVER_BIN
  const targetDir = process.env.CARGO_TARGET_DIR
    ? path.resolve(repo, process.env.CARGO_TARGET_DIR)
    : path.join(repo, 'target')
  return path.join(targetDir, 'debug', 'zajel-server')
}

export async function startServer(dataDir: string, listen = '127.0.0.1:0', extraArgs: string[] = []): Promise<Server> {
  const bin = serverBinary()
  if (!existsSync(bin)) throw new Error(`${bin} not found: run cargo build -p zajel-server`)
  if (!existsSync(path.join(dist, 'index.html'))) throw new Error(`${dist} not built: run scripts/build-web.sh`)
  const child: ChildProcess = spawn(
    bin,
    [
      '--listen', listen,
      '--data-dir', dataDir,
      '--static-dir', dist,
      // Cheap password hashing: this test is about the browser, not argon2's cost.
      '--argon2-memory-kib', '1024',
      '--argon2-iterations', '1',
      ...extraArgs,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' } },
  )
  let output = ''
  child.stderr!.on('data', (d) => (output += d))
  const url = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout!.on('data', (d) => {
      out += d
      output += d
      const m = /listening on (http:\/\/[0-9.:]+)/.exec(out)
      if (m) resolve(m[1])
    })
    child.on('exit', (code) => reject(new Error(`zajel-server exited (${code}) before listening:\n${output}`)))
  })
  return {
    url,
    log: () => output,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve()
        child.on('exit', () => resolve())
        child.kill('SIGTERM')
      }),
  }
}
