// "Sign in with <provider>" in Chromium against a real OpenID Connect provider (npm
// oidc-provider, the same script the Rust identity tests use), with the real zajel-server:
// the button, the provider's login and consent pages, back in the chat as that user, talking
// to a friend who signed up with a password. And a denied consent read as a sentence.
import { expect, test, type Page } from '@playwright/test'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { startServer, type Server } from './server.ts'

const providerScript = path.resolve(import.meta.dirname, '../../../zajel-server/tests/oidc-provider/provider.mjs')
const PASSWORD = 'correct horse battery staple'

/** A free loopback port (the provider must know Zajel's callback URL before Zajel starts). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

interface Provider {
  issuer: string
  stop(): void
}

function startProvider(redirectUri: string): Promise<Provider> {
  const child: ChildProcess = spawn('node', [providerScript, redirectUri], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stderr!.on('data', (d) => (out += d))
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d) => {
      out += d
      const m = /listening (http:\/\/[0-9.:]+)/.exec(out)
      if (m) resolve({ issuer: m[1], stop: () => child.kill('SIGTERM') })
    })
    child.on('exit', (code) => reject(new Error(`oidc provider exited (${code}):\n${out}`)))
  })
}

let server: Server
let provider: Provider
let dataDir: string

test.beforeEach(async () => {
  dataDir = mkdtempSync(path.join(tmpdir(), 'zajel-oidc-'))
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  provider = await startProvider(`${base}/api/auth/oidc/test/callback`)
  const config = path.join(dataDir, 'zajel.toml')
  writeFileSync(
    config,
    [
      '[oidc]',
      `public_url = "${base}"`,
      'after_sign_in = "/"',
      '[[oidc.providers]]',
      'id = "test"',
      'name = "Test IdP"',
      `issuer = "${provider.issuer}"`,
      'client_id = "zajel-test"',
      'client_secret = "zajel-test-secret"',
    ].join('\n'),
  )
  server = await startServer(path.join(dataDir, 'data'), `127.0.0.1:${port}`, ['--config', config])
})

test.afterEach(async ({}, info) => {
  if (info.status !== info.expectedStatus) console.log(`--- zajel-server output ---\n${server?.log()}`)
  await server?.stop()
  provider?.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

/** At the provider's dev login form: any login (it becomes `sub`) and password. */
async function providerLogin(page: Page, login: string) {
  await page.locator('input[name=login]').fill(login)
  await page.locator('input[name=password]').fill('anything')
  await page.locator('button[type=submit]').click()
}

test('sign in with the provider, land in the chat as that user, talk to a password user', async ({ browser }) => {
  const dana = await (await browser.newContext()).newPage()
  const bob = await (await browser.newContext()).newPage()
  for (const p of [dana, bob]) p.on('pageerror', (e) => console.log(`page error: ${e}`))

  await test.step('bob signs up with a password', async () => {
    await bob.goto(server.url)
    await bob.getByTestId('username').fill('bob')
    await bob.getByTestId('password').fill(PASSWORD)
    await bob.getByTestId('register').click()
    await expect(bob.getByTestId('me')).toHaveText('bob')
  })

  await test.step('dana clicks "Sign in with Test IdP", logs in and consents at the provider', async () => {
    await dana.goto(server.url)
    const button = dana.getByTestId('provider')
    await expect(button).toHaveText('Sign in with Test IdP')
    await button.click()
    await expect(dana).toHaveURL(new RegExp(`^${provider.issuer}/`))
    await providerLogin(dana, 'dana')
    // The consent page.
    await dana.locator('button[type=submit]').click()
    await expect(dana.getByTestId('me')).toHaveText('dana')
    await expect(dana.getByTestId('connection')).toHaveAttribute('data-status', 'online')
    // The session came through the cookie: no token, no marker left in the address bar.
    expect(dana.url()).toBe(`${server.url}/`)
  })

  await test.step('dana befriends bob and they chat', async () => {
    await dana.getByTestId('open-people').click()
    await dana.getByTestId('add-friend-name').fill('bob')
    await dana.getByTestId('add-friend').click()
    await expect(dana.getByTestId('outgoing')).toContainText('bob')
    await bob.getByTestId('open-people').click()
    await bob.locator('[data-testid=incoming][data-username="dana"]').getByTestId('accept').click()
    await expect(dana.getByTestId('outgoing')).toHaveCount(0)
    const back = dana.getByTestId('back')
    if (await back.isVisible()) await back.click()
    await dana.locator('[data-testid=contact][data-username="bob"]').click()
    await dana.getByTestId('composer').fill('hello from an OpenID account')
    await dana.getByTestId('send').click()
    const bobBack = bob.getByTestId('back')
    if (await bobBack.isVisible()) await bobBack.click()
    await bob.locator('[data-testid=contact][data-username="dana"]').click()
    await expect(bob.getByTestId('message').last()).toContainText('hello from an OpenID account')
  })

  await test.step('after a reload dana is still signed in', async () => {
    await dana.reload()
    await expect(dana.getByTestId('me')).toHaveText('dana')
  })
})

test('a denied consent comes back to the app as a sentence, signed out', async ({ page }) => {
  await page.goto(server.url)
  await page.getByTestId('provider').click()
  await providerLogin(page, 'erin')
  // The provider's consent page: cancel instead of allowing.
  await page.getByRole('link', { name: /cancel/i }).click()
  await expect(page.getByRole('heading', { name: 'Sign-in failed' })).toBeVisible()
  await expect(page.getByText('sign-in was cancelled at the provider')).toBeVisible()
  await page.getByRole('link', { name: 'Back to the app' }).click()
  await expect(page.getByTestId('provider-error')).toHaveText(
    'Sign-in was cancelled at the provider. Nothing was changed; try again when you are ready.',
  )
  await expect(page.getByTestId('login')).toBeVisible()
  expect(page.url()).toBe(`${server.url}/`)
})
