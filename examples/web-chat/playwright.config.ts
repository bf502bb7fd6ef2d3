import { defineConfig } from '@playwright/test'

// Debian's Chromium (`apt-get install chromium`); Playwright's own browser download is not
// used. The test starts the real zajel-server itself (see tests/server.ts).
export default defineConfig({
  testDir: 'tests',
  timeout: 120_000,
  expect: { timeout: 20_000 },
  workers: 1,
  retries: 0,
  reporter: 'list',
  use: {
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        // offline-reload.spec.ts serves the app from disk (a cached app): Chromium then treats
        // the page as public and would block its WebSocket to 127.0.0.1.
        '--disable-features=LocalNetworkAccessChecks',
      ],
    },
  },
})
