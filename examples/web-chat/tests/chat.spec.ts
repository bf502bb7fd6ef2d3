// End to end in a real browser: two users in two browser contexts (separate localStorage),
// the React app served by the real zajel-server, the Rust client running as WebAssembly.
// Every wait is on UI state; nothing sleeps for a fixed time.
import { expect, test, type Page } from '@playwright/test'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { startServer, type Server } from './server.ts'

let server: Server
let dataDir: string

test.beforeAll(async () => {
  dataDir = mkdtempSync(path.join(tmpdir(), 'zajel-web-'))
  server = await startServer(dataDir)
})

test.afterAll(async () => {
  await server?.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

test.afterEach(async ({}, info) => {
  if (info.status !== info.expectedStatus) console.log(`--- zajel-server output ---\n${server.log()}`)
})

const PASSWORD = 'correct horse battery staple'

async function register(page: Page, username: string) {
  await page.goto(server.url)
  await page.getByTestId('username').fill(username)
  await page.getByTestId('password').fill(PASSWORD)
  await page.getByTestId('register').click()
  await expect(page.getByTestId('me')).toHaveText(username)
  await expect(page.getByTestId('connection')).toHaveAttribute('data-status', 'online')
}

const friend = (page: Page, name: string) => page.locator(`[data-testid=friend][data-username="${name}"]`)
const conversation = (page: Page, name: string) =>
  page.locator(`[data-testid=conversation][data-peer="${name}"]`)
const messages = (page: Page) => page.getByTestId('message')

async function seqs(page: Page): Promise<number[]> {
  return (await messages(page).evaluateAll((els) => els.map((e) => Number(e.getAttribute('data-seq')))))
}

test('alice and bob befriend, chat live, keep exactly-once history across a reload and a server restart', async ({
  browser,
}) => {
  const aliceCtx = await browser.newContext()
  const bobCtx = await browser.newContext()
  const alice = await aliceCtx.newPage()
  let bob = await bobCtx.newPage()
  for (const p of [alice, bob]) {
    p.on('pageerror', (e) => console.log(`page error: ${e}`))
    p.on('console', (m) => m.type() === 'error' && console.log(`console error: ${m.text()}`))
  }

  await test.step('both register in the UI', async () => {
    await register(alice, 'alice')
    await register(bob, 'bob')
  })

  await test.step('bob adds alice, alice accepts, both see each other online', async () => {
    await bob.getByTestId('add-friend-name').fill('alice')
    await bob.getByTestId('add-friend').click()
    await expect(bob.getByTestId('outgoing')).toContainText('alice')
    const request = alice.locator('[data-testid=incoming][data-username="bob"]')
    await expect(request).toBeVisible()
    await request.getByTestId('accept').click()
    await expect(friend(alice, 'bob')).toHaveAttribute('data-online', 'true')
    await expect(friend(bob, 'alice')).toHaveAttribute('data-online', 'true')
    await expect(bob.getByTestId('outgoing')).toHaveCount(0)
  })

  await test.step('bob writes; alice sees an unread count, opens the chat; bob sees "seen"', async () => {
    await friend(bob, 'alice').click()
    await bob.getByTestId('composer').fill('hi alice')
    await bob.getByTestId('send').click()
    await expect(messages(bob)).toHaveText([/hi alice/])
    await expect(conversation(alice, 'bob').getByTestId('unread')).toHaveText('1')
    await expect(conversation(alice, 'bob')).toContainText('hi alice')
    await expect(bob.getByTestId('tick')).toHaveAttribute('data-seen', 'false')

    await friend(alice, 'bob').click()
    await expect(messages(alice)).toHaveText([/hi alice/])
    await expect(conversation(alice, 'bob').getByTestId('unread')).toHaveCount(0)
    await expect(bob.getByTestId('tick')).toHaveAttribute('data-seen', 'true')
  })

  await test.step('alice types (bob sees it), then sends; messages flow live both ways', async () => {
    await alice.getByTestId('composer').pressSequentially('hello b')
    await expect(bob.getByTestId('typing')).toHaveText('alice is typing…')
    await alice.getByTestId('composer').pressSequentially('ob')
    await alice.getByTestId('send').click()
    await expect(messages(bob)).toHaveText([/hi alice/, /hello bob/])
    await expect(bob.getByTestId('typing')).toHaveText('')

    await bob.getByTestId('composer').fill('how are you?')
    await bob.getByTestId('send').click()
    await expect(messages(alice)).toHaveText([/hi alice/, /hello bob/, /how are you\?/])
    expect(await seqs(alice)).toEqual([1, 2, 3])
  })

  await test.step('bob reloads: the session is restored and history shows once', async () => {
    await bob.reload()
    await expect(bob.getByTestId('connection')).toHaveAttribute('data-status', 'online')
    await expect(bob.getByTestId('me')).toHaveText('bob')
    await friend(bob, 'alice').click()
    await expect(messages(bob)).toHaveText([/hi alice/, /hello bob/, /how are you\?/])
    expect(await seqs(bob)).toEqual([1, 2, 3])
  })

  await test.step('a message sent while bob\'s page is closed arrives after he comes back', async () => {
    await bob.close()
    await expect(friend(alice, 'bob')).toHaveAttribute('data-online', 'false')
    await alice.getByTestId('composer').fill('while you were away')
    await alice.getByTestId('send').click()
    await expect(messages(alice)).toHaveCount(4)
    await expect(alice.getByTestId('tick').last()).toHaveAttribute('data-seen', 'false')

    bob = await bobCtx.newPage()
    await bob.goto(server.url)
    await expect(bob.getByTestId('connection')).toHaveAttribute('data-status', 'online')
    await expect(conversation(bob, 'alice').getByTestId('unread')).toHaveText('1')
    await expect(conversation(bob, 'alice')).toContainText('while you were away')
    await expect(friend(alice, 'bob')).toHaveAttribute('data-online', 'true')
    await friend(bob, 'alice').click()
    await expect(messages(bob)).toHaveText([/hi alice/, /hello bob/, /how are you\?/, /while you were away/])
    expect(await seqs(bob)).toEqual([1, 2, 3, 4])
    await expect(alice.getByTestId('tick').last()).toHaveAttribute('data-seen', 'true')
  })

  await test.step('live messages keep flowing after the reload, still exactly once', async () => {
    await alice.getByTestId('composer').fill('welcome back')
    await alice.getByTestId('send').click()
    await expect(messages(bob)).toHaveCount(5)
    await expect(messages(bob).last()).toContainText('welcome back')
    expect(await seqs(bob)).toEqual([1, 2, 3, 4, 5])
  })

  await test.step('the server restarts: both pages show the reconnect, then carry on', async () => {
    await server.stop()
    for (const p of [alice, bob])
      await expect(p.getByTestId('connection')).not.toHaveAttribute('data-status', 'online')
    server = await startServer(dataDir, new URL(server.url).host)
    for (const p of [alice, bob])
      await expect(p.getByTestId('connection')).toHaveAttribute('data-status', 'online')
    await bob.getByTestId('composer').fill('after the restart')
    await bob.getByTestId('send').click()
    await expect(messages(alice)).toHaveCount(6)
    await expect(messages(alice).last()).toContainText('after the restart')
    expect(await seqs(alice)).toEqual([1, 2, 3, 4, 5, 6])
    expect(await seqs(bob)).toEqual([1, 2, 3, 4, 5, 6])
  })

  await aliceCtx.close()
  await bobCtx.close()
})
