// A system message in the browser: the real zajel-server posts one when two users become
// friends (`--friends-notice`). Both users see it as a centered grey notice, not as either
// one's bubble; it counts as unread, previews in the list, and stays after a reload.
import { expect, test, type Page } from '@playwright/test'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { startServer, type Server } from './server.ts'

const NOTICE = 'bob and alice are now friends'
let server: Server
let dataDir: string

test.beforeEach(async () => {
  dataDir = mkdtempSync(path.join(tmpdir(), 'zajel-web-'))
  server = await startServer(dataDir, '127.0.0.1:0', ['--friends-notice', '{requester} and {accepter} are now friends'])
})

test.afterEach(async ({}, info) => {
  if (info.status !== info.expectedStatus) console.log(`--- zajel-server output ---\n${server.log()}`)
  await server?.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

const contact = (page: Page, name: string) => page.locator(`[data-testid=contact][data-username="${name}"]`)

async function register(page: Page, username: string) {
  await page.goto(server.url)
  await page.getByTestId('username').fill(username)
  await page.getByTestId('password').fill('correct horse battery staple')
  await page.getByTestId('register').click()
  await expect(page.getByTestId('connection')).toHaveAttribute('data-status', 'online')
}

async function openChat(page: Page, name: string) {
  await contact(page, name).click()
  await expect(page.getByTestId('peer-name')).toHaveText(name)
}

/** The notice is centered in the message list and is no bubble. */
async function expectNotice(page: Page) {
  const notice = page.getByTestId('system-message')
  await expect(notice).toHaveCount(1)
  await expect(notice.locator('.body')).toHaveText(NOTICE)
  await expect(notice).not.toHaveClass(/bubble/)
  await expect(notice).toHaveCSS('text-align', 'center')
  const [box, list] = await Promise.all([notice.boundingBox(), page.getByTestId('messages').boundingBox()])
  expect(box && list).toBeTruthy()
  const offCenter = Math.abs(box!.x + box!.width / 2 - (list!.x + list!.width / 2))
  expect(offCenter).toBeLessThan(4)
}

test('the friends notice shows as a centered system line for both users', async ({ browser }) => {
  const alice = await (await browser.newContext()).newPage()
  const bob = await (await browser.newContext()).newPage()
  await register(alice, 'alice')
  await register(bob, 'bob')

  await bob.getByTestId('open-people').click()
  await bob.getByTestId('add-friend-name').fill('alice')
  await bob.getByTestId('add-friend').click()
  await alice.getByTestId('open-people').click()
  await alice.locator('[data-testid=incoming][data-username="bob"]').getByTestId('accept').click()
  for (const page of [alice, bob]) {
    const back = page.getByTestId('back')
    if (await back.isVisible()) await back.click()
  }

  // Unread for both (neither wrote it), previewed as its text.
  for (const [page, peer] of [[alice, 'bob'], [bob, 'alice']] as const) {
    await expect(contact(page, peer).getByTestId('preview')).toHaveText(NOTICE)
    await expect(contact(page, peer).getByTestId('unread')).toHaveText('1')
  }

  await openChat(alice, 'bob')
  await openChat(bob, 'alice')
  for (const page of [alice, bob]) {
    await expectNotice(page)
    await expect(page.getByTestId('message')).toHaveCount(0)
  }
  await alice.screenshot({ path: test.info().outputPath('system-message.png') })

  // People's messages after it are bubbles as usual; the notice keeps its place after a reload.
  await bob.getByTestId('composer').fill('hi alice')
  await bob.getByTestId('send').click()
  await expect(alice.getByTestId('message')).toHaveText([/hi alice/])
  await alice.reload()
  await openChat(alice, 'bob')
  await expectNotice(alice)
  await expect(alice.locator('[data-testid=system-message], [data-testid=message]')).toHaveText([
    new RegExp(`^${NOTICE}`),
    /hi alice/,
  ])
})
