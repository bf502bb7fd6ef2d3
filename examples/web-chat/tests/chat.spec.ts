// End to end in a real browser, at a desktop and a phone size: two users in two browser
// contexts (separate storage), the React app served by the real zajel-server, the Rust client
// running as WebAssembly. Every wait is on UI state; nothing sleeps for a fixed time.
// Screenshots of each main screen in both themes go to the test's output folder.
import { expect, test, type Page } from '@playwright/test'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { startServer, type Server } from './server.ts'

const PASSWORD = 'correct horse battery staple'
const SIZES = [
  { name: 'desktop', width: 1280, height: 800 },
  { name: 'phone', width: 390, height: 844 },
] as const

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

const messages = (page: Page) => page.getByTestId('message')
const contact = (page: Page, name: string) => page.locator(`[data-testid=contact][data-username="${name}"]`)
const pending = (page: Page) => page.getByTestId('pending')

async function seqs(page: Page): Promise<number[]> {
  return messages(page).evaluateAll((els) => els.map((e) => Number(e.getAttribute('data-seq'))))
}

/** Nothing is wider than the viewport, and every visible control lies inside it. */
async function expectFits(page: Page) {
  const problems = await page.evaluate(() => {
    const out: string[] = []
    const w = window.innerWidth
    if (document.documentElement.scrollWidth > w) out.push(`page scrollWidth ${document.documentElement.scrollWidth} > ${w}`)
    for (const el of document.querySelectorAll<HTMLElement>('button, input, textarea, a, .bubble')) {
      const r = el.getBoundingClientRect()
      if (r.width === 0 && r.height === 0) continue // not rendered
      if (r.left < -1 || r.right > w + 1)
        out.push(`${el.tagName}[${el.dataset.testid ?? el.className}] spans ${r.left}..${r.right} of ${w}`)
      if (el.classList.contains('bubble') && el.scrollWidth > el.clientWidth + 1)
        out.push(`bubble ${el.dataset.seq} overflows (${el.scrollWidth} > ${el.clientWidth})`)
    }
    return out
  })
  expect(problems).toEqual([])
}

async function screenshots(page: Page, size: string, screen: string) {
  for (const colorScheme of ['light', 'dark'] as const) {
    await page.emulateMedia({ colorScheme })
    await expect(page.locator('html')).toHaveAttribute('data-theme', colorScheme)
    await page.screenshot({ path: test.info().outputPath(`${size}-${screen}-${colorScheme}.png`) })
  }
  await page.emulateMedia({ colorScheme: 'light' })
}

/** On a phone the list and the detail are two screens: go back to the list if needed. */
async function toList(page: Page) {
  const back = page.getByTestId('back')
  if (await back.isVisible()) await back.click()
  await expect(page.getByTestId('open-people')).toBeVisible()
}

async function openChat(page: Page, name: string) {
  await toList(page)
  await contact(page, name).click()
  await expect(page.getByTestId('peer-name')).toHaveText(name)
  await expect(page.getByTestId('composer')).toBeVisible()
}

async function send(page: Page, text: string) {
  await page.getByTestId('composer').fill(text)
  await page.getByTestId('send').click()
}

async function register(page: Page, username: string) {
  await page.goto(server.url)
  await page.getByTestId('username').fill(username)
  await page.getByTestId('password').fill(PASSWORD)
  await page.getByTestId('register').click()
  await expect(page.getByTestId('me')).toHaveText(username)
  await expect(page.getByTestId('connection')).toHaveAttribute('data-status', 'online')
}

for (const size of SIZES) {
  test(`${size.name} ${size.width}x${size.height}: two users befriend, chat, fail, reload, reconnect`, async ({
    browser,
  }) => {
    const viewport = { width: size.width, height: size.height }
    const aliceCtx = await browser.newContext({ viewport })
    const bobCtx = await browser.newContext({ viewport })
    const alice = await aliceCtx.newPage()
    let bob = await bobCtx.newPage()
    for (const p of [alice, bob]) {
      p.on('pageerror', (e) => console.log(`page error: ${e}`))
      p.on('console', (m) => m.type() === 'error' && console.log(`console error: ${m.text()}`))
    }

    await test.step('sign in: a wrong password reads as a sentence, then both register', async () => {
      await alice.goto(server.url)
      await expectFits(alice)
      await screenshots(alice, size.name, 'sign-in')
      await alice.getByTestId('username').fill('alice')
      await alice.getByTestId('password').fill('short')
      await alice.getByTestId('register').click()
      await expect(alice.getByTestId('auth-error')).toHaveText('Passwords need 8 to 128 characters.')
      await register(alice, 'alice')
      await register(bob, 'bob')
      await expect(alice.getByText('No friends yet.')).toBeVisible()
      await expectFits(alice)
      await screenshots(alice, size.name, 'empty-list')
    })

    await test.step('friend requests: unknown name, then bob asks alice, alice accepts in her inbox', async () => {
      await bob.getByTestId('open-people').click()
      await bob.getByTestId('add-friend-name').fill('nobody')
      await bob.getByTestId('add-friend').click()
      await expect(bob.getByTestId('people-notice')).toHaveText('There is nobody with that username.')
      await bob.getByTestId('add-friend-name').fill('alice')
      await bob.getByTestId('add-friend').click()
      await expect(bob.getByTestId('outgoing')).toContainText('alice')
      await expect(alice.getByTestId('requests-badge')).toHaveText('1')
      await alice.getByTestId('open-people').click()
      const request = alice.locator('[data-testid=incoming][data-username="bob"]')
      await expect(request).toBeVisible()
      await expectFits(alice)
      await screenshots(alice, size.name, 'requests')
      await request.getByTestId('accept').click()
      await expect(bob.getByTestId('outgoing')).toHaveCount(0)
      await toList(alice)
      await toList(bob)
      await expect(contact(alice, 'bob')).toHaveAttribute('data-online', 'true')
      await expect(contact(bob, 'alice')).toHaveAttribute('data-online', 'true')
      await expect(alice.getByTestId('requests-badge')).toHaveCount(0)
    })

    await test.step('bob writes: unread on alice\'s row and in her tab title; she reads, bob sees "seen"', async () => {
      await openChat(bob, 'alice')
      await expect(bob.getByTestId('empty-chat')).toBeVisible()
      await expect(bob.getByTestId('peer-status')).toHaveText('online')
      await send(bob, 'hi alice')
      await expect(messages(bob)).toHaveText([/hi alice/])
      await expect(bob.getByTestId('day-separator')).toHaveText(['Today'])
      await expect(contact(alice, 'bob').getByTestId('unread')).toHaveText('1')
      await expect(contact(alice, 'bob').getByTestId('preview')).toHaveText('hi alice')
      await expect(alice).toHaveTitle('(1) Zajel')
      await expect(bob.getByTestId('tick')).toHaveAttribute('data-seen', 'false')

      await openChat(alice, 'bob')
      await expect(messages(alice)).toHaveText([/hi alice/])
      await expect(alice).toHaveTitle('Zajel')
      await expect(bob.getByTestId('tick')).toHaveAttribute('data-seen', 'true')
    })

    await test.step('alice types (bob sees it in the header), then sends; messages flow both ways', async () => {
      await alice.getByTestId('composer').pressSequentially('hello b')
      await expect(bob.getByTestId('peer-status')).toHaveText('typing…')
      await alice.getByTestId('composer').pressSequentially('ob')
      await alice.getByTestId('composer').press('Enter')
      await expect(messages(bob)).toHaveText([/hi alice/, /hello bob/])
      await expect(bob.getByTestId('peer-status')).toHaveText('online')

      await send(bob, 'how are you?')
      await expect(messages(alice)).toHaveText([/hi alice/, /hello bob/, /how are you\?/])
      expect(await seqs(alice)).toEqual([1, 2, 3])
    })

    await test.step('a long unbroken word wraps inside its bubble; a too-long message says why', async () => {
      await send(alice, 'x'.repeat(400))
      await expect(messages(alice)).toHaveCount(4)
      await expect(messages(bob)).toHaveCount(4)
      await expectFits(alice)
      await expectFits(bob)

      await send(alice, 'y'.repeat(5000))
      await expect(pending(alice)).toHaveAttribute('data-state', 'failed')
      await expect(alice.getByTestId('send-error')).toContainText('Not sent. This message is too long.')
      await expect(alice.getByTestId('composer')).toHaveValue('')
      await expect(alice.getByTestId('retry')).toHaveCount(0) // the same text would fail again
      await expect(alice.getByTestId('delete')).toBeVisible()
      await expectFits(alice)
      await screenshots(alice, size.name, 'chat-with-error')
      await alice.getByTestId('edit').click()
      await expect(alice.getByTestId('composer')).toHaveValue('y'.repeat(5000))
      await expect(pending(alice)).toHaveCount(0)
      await alice.getByTestId('composer').fill('')
      await expect(messages(bob)).toHaveCount(4)
      expect(await seqs(bob)).toEqual([1, 2, 3, 4])
    })

    await test.step('bob reloads: the session comes back and the history shows once', async () => {
      await bob.reload()
      await expect(bob.getByTestId('connection')).toHaveAttribute('data-status', 'online')
      await expect(bob.getByTestId('me')).toHaveText('bob')
      await openChat(bob, 'alice')
      await expect(messages(bob)).toHaveCount(4)
      expect(await seqs(bob)).toEqual([1, 2, 3, 4])
      await screenshots(bob, size.name, 'chat')
    })

    await test.step('bob leaves: alice sees "last seen"; her message waits for him with an unread count', async () => {
      await bob.close()
      await expect(alice.getByTestId('peer-status')).toHaveText(/^last seen (just now|1 min ago)$/)
      await send(alice, 'while you were away')
      await expect(messages(alice)).toHaveCount(5)
      await expect(alice.getByTestId('tick').last()).toHaveAttribute('data-seen', 'false')

      bob = await bobCtx.newPage()
      await bob.goto(server.url)
      await expect(bob.getByTestId('connection')).toHaveAttribute('data-status', 'online')
      await expect(contact(bob, 'alice').getByTestId('unread')).toHaveText('1')
      await expect(contact(bob, 'alice').getByTestId('preview')).toHaveText('while you were away')
      await expect(alice.getByTestId('peer-status')).toHaveText('online')
      await expectFits(bob)
      await screenshots(bob, size.name, 'list')
      await openChat(bob, 'alice')
      await expect(messages(bob)).toHaveCount(5)
      expect(await seqs(bob)).toEqual([1, 2, 3, 4, 5])
      await expect(alice.getByTestId('tick').last()).toHaveAttribute('data-seen', 'true')
    })

    await test.step('the server goes down: banner, a message typed offline waits, then goes out once', async () => {
      await server.stop()
      for (const p of [alice, bob]) {
        await expect(p.getByTestId('connection')).toHaveAttribute('data-status', /reconnecting|connecting/)
        await expect(p.getByTestId('connection')).toBeVisible()
      }
      await send(bob, 'sent while offline')
      await expect(pending(bob)).toHaveAttribute('data-state', /queued|sending/)
      await expect(pending(bob)).toContainText('waiting for network')
      await expectFits(bob)
      await screenshots(bob, size.name, 'offline')
      server = await startServer(dataDir, new URL(server.url).host)
      for (const p of [alice, bob]) {
        await expect(p.getByTestId('connection')).toHaveAttribute('data-status', 'online')
        await expect(p.getByTestId('connection')).toBeHidden()
      }
      await expect(pending(bob)).toHaveCount(0)
      await expect(messages(alice)).toHaveCount(6)
      await expect(messages(alice).last()).toContainText('sent while offline')
      await send(alice, 'welcome back')
      await expect(messages(bob)).toHaveCount(7)
      expect(await seqs(alice)).toEqual([1, 2, 3, 4, 5, 6, 7])
      expect(await seqs(bob)).toEqual([1, 2, 3, 4, 5, 6, 7])
    })

    await test.step('keyboard: the theme button switches and remembers; Escape leaves the chat', async () => {
      await expect(alice.locator('html')).toHaveAttribute('data-theme', 'light')
      await toList(alice)
      await alice.getByTestId('theme').focus()
      await alice.keyboard.press('Enter')
      await expect(alice.locator('html')).toHaveAttribute('data-theme', 'dark')
      await alice.reload()
      await expect(alice.locator('html')).toHaveAttribute('data-theme', 'dark')
      await openChat(alice, 'bob')
      await alice.getByTestId('composer').focus()
      await alice.keyboard.press('Escape')
      await expect(alice.getByTestId('peer-name')).toHaveCount(0)
    })

    await test.step('remove behind a confirmation: the chat stays readable, sending is closed', async () => {
      await openChat(bob, 'alice')
      await bob.getByTestId('friend-menu').click()
      await bob.getByTestId('remove-friend').click()
      await expect(bob.getByTestId('confirm')).toBeVisible()
      await expectFits(bob)
      await screenshots(bob, size.name, 'confirm-remove')
      await bob.getByTestId('confirm-yes').click()
      await expect(contact(bob, 'alice')).toHaveCount(0)
      await expect(contact(alice, 'bob')).toHaveCount(0)
    })

    await aliceCtx.close()
    await bobCtx.close()
  })
}
