// @zajel/client under Node (bots, server-side rendering, tests): the same package, the same
// wasm, against the real zajel-server on loopback. Node 20 has no global WebSocket; the
// package picks up the `ws` package by itself. Run: `npm run test:node -w @zajel/client`
// after `cargo build -p zajel-server` and scripts/build-web.sh.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'
import { ZajelClient, ZajelError, loadZajel } from '@zajel/client'

const repo = path.resolve(import.meta.dirname, '../../..')
const bin =
  process.env.ZAJEL_SERVER_BIN ??
  path.join(path.resolve(repo, process.env.CARGO_TARGET_DIR ?? 'target'), 'debug', 'zajel-server')

let server
let url
let dataDir

before(async () => {
  assert.ok(existsSync(bin), `${bin} not found: run cargo build -p zajel-server`)
  dataDir = mkdtempSync(path.join(tmpdir(), 'zajel-node-'))
  server = spawn(
    bin,
    ['--listen', '127.0.0.1:0', '--data-dir', dataDir, '--argon2-memory-kib', '1024', '--argon2-iterations', '1'],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, RUST_LOG: 'warn' } },
  )
  url = await new Promise((resolve, reject) => {
    let out = ''
    server.stdout.on('data', (d) => {
      out += d
      const m = /listening on (http:\/\/[0-9.:]+)/.exec(out)
      if (m) resolve(m[1])
    })
    server.on('exit', (code) => reject(new Error(`zajel-server exited (${code}): ${out}`)))
  })
})

after(async () => {
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server.on('exit', r))
    server.kill('SIGTERM')
    await exited
  }
  rmSync(dataDir, { recursive: true, force: true })
})

/** The next event matching `pred` (events that already arrived are not replayed). */
function next(client, pred) {
  return new Promise((resolve) => {
    const off = client.on((e) => {
      if (pred(e)) {
        off()
        resolve(e)
      }
    })
  })
}

test('runs without a global WebSocket (Node 20) by loading ws', async () => {
  if (Number(process.versions.node.split('.')[0]) < 22) assert.equal(globalThis.WebSocket, undefined)
  await loadZajel()
  assert.equal(typeof globalThis.WebSocket, 'function')
})

test('two bots befriend and chat through the real server', async () => {
  const a = await ZajelClient.register(url, 'ada', 'correct horse battery staple')
  const b = await ZajelClient.register(url, 'bea', 'correct horse battery staple')
  const ada = await ZajelClient.connect(url, a.token)
  const bea = await ZajelClient.connect(url, b.token)
  try {
    assert.equal(ada.state.status, 'online')
    const request = next(bea, (e) => e.type === 'friend' && e.relation === 'request_received')
    await ada.requestFriend('bea')
    await request
    await bea.acceptFriend(a.user.id)

    const received = next(bea, (e) => e.type === 'message')
    const sent = await ada.send(b.user.id, 'hello from node')
    assert.equal(sent.seq, 1)
    const got = await received
    assert.equal(got.message.body, 'hello from node')
    assert.equal(got.message.sender, a.user.id)

    const page = await bea.history(sent.conversation)
    assert.deepEqual(
      page.messages.map((m) => m.body),
      ['hello from node'],
    )
  } finally {
    ada.close()
    bea.close()
  }
})

test('failures are typed ZajelErrors with a code and a one-line message', async () => {
  await assert.rejects(ZajelClient.login(url, 'ada', 'wrong password!'), (e) => {
    assert.ok(e instanceof ZajelError)
    assert.equal(e.code, 'invalid_credentials')
    return true
  })
  // Nothing listens on port 9 of loopback: a transport error, not a stack trace.
  await assert.rejects(ZajelClient.login('http://127.0.0.1:9', 'ada', 'whatever123'), (e) => {
    assert.ok(e instanceof ZajelError)
    assert.equal(e.code, 'transport')
    assert.ok(!e.message.includes('\n'), e.message)
    assert.ok(!/JsValue|at .*wasm/.test(e.message), e.message)
    return true
  })
})
