// Issue 8's browser test: messages typed while the server is down survive a page reload
// (the client keeps its outbox, cursors and a cache of the contact list in IndexedDB): after
// the reload, still offline, the contact and the three unsent messages are shown; once the
// server is back they are delivered exactly once and the other user sees every message exactly
// once, in order.
import { expect, test, type BrowserContext, type Page } from '@playwright/test'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { startServer, type Server } from './server.ts'

let server: Server
let dataDir: string

test.beforeEach(async () => {
  dataDir = mkdtempSync(path.join(tmpdir(), 'zajel-web-'))
  server = await startServer(dataDir)
})

test.afterEach(async ({}, info) => {
  if (info.status !== info.expectedStatus) console.log(`--- zajel-server output ---\n${server.log()}`)
  await server?.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

const dist = path.resolve(import.meta.dirname, '../dist')

/** Serves the app's files from disk, as a cached or separately hosted app would be: the page
 * can reload while the Zajel server is down. The API and the WebSocket still go to it. */
async function serveAppFromCache(ctx: BrowserContext) {
  await ctx.route(
    (url) => url.origin === new URL(server.url).origin && !url.pathname.startsWith('/api/') && url.pathname !== '/ws',
    (route) => {
      const p = new URL(route.request().url()).pathname
      const file = path.join(dist, p === '/' ? 'index.html' : p)
      return route.fulfill({ path: existsSync(file) && file.startsWith(dist) ? file : path.join(dist, 'index.html') })
    },
  )
}

const messages = (page: Page) => page.getByTestId('message')
const seqs = (page: Page) =>
  messages(page).evaluateAll((els) => els.map((e) => Number(e.getAttribute('data-seq'))))
const bodies = (page: Page) => messages(page).evaluateAll((els) => els.map((e) => e.querySelector('.body')?.textContent))
const pendingBodies = (page: Page) =>
  page.getByTestId('pending').evaluateAll((els) => els.map((e) => e.querySelector('.body')?.textContent))

async function register(page: Page, username: string) {
  await page.goto(server.url)
  await page.getByTestId('username').fill(username)
  await page.getByTestId('password').fill('correct horse battery staple')
  await page.getByTestId('register').click()
  await expect(page.getByTestId('connection')).toHaveAttribute('data-status', 'online')
}

async function openChat(page: Page, name: string) {
  await page.locator(`[data-testid=contact][data-username="${name}"]`).click()
  await expect(page.getByTestId('peer-name')).toHaveText(name)
}

/** The outbox bodies the client saved in IndexedDB (what a reload will find). */
function storedOutbox(page: Page): Promise<string> {
  return page.evaluate(
    () =>
      new Promise<string>((resolve) => {
        const open = indexedDB.open('zajel')
        open.onerror = () => resolve('')
        open.onsuccess = () => {
          const db = open.result
          if (!db.objectStoreNames.contains('snapshots')) return resolve('')
          const all = db.transaction('snapshots', 'readonly').objectStore('snapshots').getAll()
          all.onsuccess = () => resolve(JSON.stringify(all.result))
          all.onerror = () => resolve('')
        }
      }),
  )
}

test('three messages typed while the server is down survive a reload and arrive exactly once', async ({
  browser,
}) => {
  const aliceCtx = await browser.newContext()
  const bobCtx = await browser.newContext()
  await serveAppFromCache(bobCtx)
  const alice = await aliceCtx.newPage()
  const bob = await bobCtx.newPage()
  for (const p of [alice, bob]) {
    p.on('pageerror', (e) => console.log(`page error: ${e}`))
    p.on('console', (m) => m.type() === 'error' && console.log(`console error: ${m.text()}`))
  }

  await register(alice, 'alice')
  await register(bob, 'bob')
  await bob.getByTestId('open-people').click()
  await bob.getByTestId('add-friend-name').fill('alice')
  await bob.getByTestId('add-friend').click()
  await alice.getByTestId('open-people').click()
  await alice.locator('[data-testid=incoming][data-username="bob"]').getByTestId('accept').click()
  await openChat(bob, 'alice')
  await openChat(alice, 'bob')
  await bob.getByTestId('composer').fill('before')
  await bob.getByTestId('send').click()
  await expect(messages(alice)).toHaveCount(1)

  await server.stop()
  await expect(bob.getByTestId('connection')).not.toHaveAttribute('data-status', 'online')
  for (const text of ['offline 1', 'offline 2', 'offline 3']) {
    await bob.getByTestId('composer').fill(text)
    await bob.getByTestId('composer').press('Enter')
  }
  await expect(bob.getByTestId('pending')).toHaveCount(3)
  await expect.poll(() => storedOutbox(bob)).toContain('offline 3')

  await bob.reload()
  await expect(bob.getByTestId('connection')).not.toHaveAttribute('data-status', 'online')
  // Still offline after the reload: the contact list comes from the client's stored view
  // (friends + conversations), and the three messages show in the chat as not sent yet.
  const aliceContact = bob.locator('[data-testid=contact][data-username="alice"]')
  await expect(aliceContact).toBeVisible()
  await expect(aliceContact.getByTestId('preview')).toHaveText('You: before')
  await openChat(bob, 'alice')
  await expect(bob.getByTestId('pending')).toHaveCount(3)
  expect(await pendingBodies(bob)).toEqual(['offline 1', 'offline 2', 'offline 3'])
  expect(await bob.getByTestId('pending').evaluateAll((els) => els.map((e) => e.getAttribute('data-state')))).toEqual([
    'queued',
    'queued',
    'queued',
  ])
  await expect(bob.getByTestId('connection')).not.toHaveAttribute('data-status', 'online')

  server = await startServer(dataDir, new URL(server.url).host)
  await expect(bob.getByTestId('connection')).toHaveAttribute('data-status', 'online')
  await expect(alice.getByTestId('connection')).toHaveAttribute('data-status', 'online')
  await openChat(bob, 'alice')
  await expect(messages(alice)).toHaveCount(4)
  await expect(messages(bob)).toHaveCount(4)
  await expect(bob.getByTestId('pending')).toHaveCount(0)
  expect(await bodies(alice)).toEqual(['before', 'offline 1', 'offline 2', 'offline 3'])
  expect(await seqs(alice)).toEqual([1, 2, 3, 4])
  expect(await seqs(bob)).toEqual([1, 2, 3, 4])

  // Nothing is sent twice: a reload now neither re-sends nor duplicates.
  await bob.reload()
  await openChat(bob, 'alice')
  await expect(messages(bob)).toHaveCount(4)
  await alice.getByTestId('composer').fill('got them')
  await alice.getByTestId('send').click()
  await expect(messages(bob)).toHaveCount(5)
  expect(await seqs(bob)).toEqual([1, 2, 3, 4, 5])
  expect(await seqs(alice)).toEqual([1, 2, 3, 4, 5])
  expect(await storedOutbox(bob)).not.toContain('offline 1')

  await aliceCtx.close()
  await bobCtx.close()
})
