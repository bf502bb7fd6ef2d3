// The npm package as a web developer without Rust gets it: `npm pack` the built package,
// install the tarball into a fresh Vite app (no workspace link, no Rust toolchain from here
// on), type-check and build that app, serve it on its own origin, and chat with the real
// zajel-server on another origin through CORS. A server that does not list the app's origin
// refuses it, and the app sees a typed ZajelError, not a stack trace.
import { expect, test } from '@playwright/test'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { startServer, type Server } from './server.ts'

const here = import.meta.dirname
const root = path.resolve(here, '../../..')
const pkgDir = path.join(root, 'bindings/js')

let dir: string
let app: string
let appUrl: string
let preview: ChildProcess
let server: Server
let strict: Server

const version = (name: string) =>
  (JSON.parse(readFileSync(path.join(root, 'node_modules', name, 'package.json'), 'utf8')) as { version: string })
    .version

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
    s.on('error', reject)
  })
}

const run = (cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}) =>
  execFileSync(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: 'pipe', encoding: 'utf8' })

test.beforeAll(async () => {
  test.setTimeout(240_000)
  dir = mkdtempSync(path.join(tmpdir(), 'zajel-fresh-'))
  app = path.join(dir, 'app')
  run('npm', ['pack', '--pack-destination', dir], pkgDir)
  const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'))!
  cpSync(path.join(here, 'fresh-app'), app, { recursive: true })
  writeFileSync(
    path.join(app, 'package.json'),
    JSON.stringify({
      name: 'fresh-app',
      private: true,
      type: 'module',
      dependencies: { '@zajel/client': `file:../${tarball}` },
      devDependencies: { vite: version('vite'), typescript: version('typescript') },
    }),
  )
  run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund'], app)

  const port = await freePort()
  appUrl = `http://127.0.0.1:${port}`
  server = await startServer(mkdtempSync(path.join(dir, 'data-')), '127.0.0.1:0', ['--cors-origins', appUrl])
  strict = await startServer(mkdtempSync(path.join(dir, 'data-')))

  run('npx', ['tsc', '-p', '.'], app)
  run('npx', ['vite', 'build'], app, { VITE_ZAJEL_SERVER: server.url })
  preview = spawn('npx', ['vite', 'preview', '--port', String(port), '--strictPort', '--host', '127.0.0.1'], {
    cwd: app,
    stdio: 'ignore',
    detached: true,
  })
  await expect
    .poll(async () => (await fetch(appUrl).catch(() => null))?.status, { timeout: 30_000 })
    .toBe(200)
})

test.afterAll(async () => {
  if (preview?.pid) process.kill(-preview.pid, 'SIGTERM')
  await server?.stop()
  await strict?.stop()
  rmSync(dir, { recursive: true, force: true })
})

test('the tarball holds the wasm, JS, types, README and LICENSE; React is not needed', () => {
  const installed = path.join(app, 'node_modules/@zajel/client')
  for (const f of [
    'package.json',
    'README.md',
    'LICENSE',
    'dist/index.js',
    'dist/index.d.ts',
    'dist/react.js',
    'dist/react.d.ts',
    'pkg/zajel_wasm.js',
    'pkg/zajel_wasm_bg.wasm',
  ])
    expect(existsSync(path.join(installed, f)), f).toBe(true)
  expect(existsSync(path.join(installed, 'src'))).toBe(false)
  expect(existsSync(path.join(app, 'node_modules/react'))).toBe(false)
})

test('a page on another origin chats with the server through CORS', async ({ page }) => {
  page.on('console', (m) => m.type() === 'error' && console.log(`console: ${m.text()}`))
  await page.goto(appUrl)
  await expect(page.locator('#status')).toHaveText('ready')
  const result = await page.evaluate(() =>
    (window as unknown as { zajel: { chat(a: string, b: string): Promise<unknown> } }).zajel.chat('ann', 'ben'),
  )
  expect(result).toEqual({
    seq: 1,
    body: 'hello ben, from another origin',
    wrong: { name: 'ZajelError', code: 'body_too_long', message: expect.any(String) },
  })
})

test('a server that does not allow the origin: a typed transport error, no stack trace', async ({ page }) => {
  await page.goto(appUrl)
  await expect(page.locator('#status')).toHaveText('ready')
  const error = (await page.evaluate(
    (at) =>
      (window as unknown as { zajel: { login(u: string, p: string, at: string): Promise<unknown> } }).zajel.login(
        'ann',
        'correct horse battery staple',
        at,
      ),
    strict.url,
  )) as { name: string; code: string; message: string }
  expect(error.name).toBe('ZajelError')
  expect(error.code).toBe('transport')
  expect(error.message).not.toContain('\n')
  expect(error.message).not.toMatch(/JsValue|wasm-function|\bat http/)
})
