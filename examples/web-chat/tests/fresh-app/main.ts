// A fresh app of a web developer with no Rust: it only installed the @zajel/client tarball.
// It runs on its own origin; the server is elsewhere (VITE_ZAJEL_SERVER).
import { ZajelClient, ZajelError, type ZajelErrorCode, type ZajelEvent } from '@zajel/client'

const server: string = import.meta.env.VITE_ZAJEL_SERVER

async function errorOf(p: Promise<unknown>): Promise<{ name: string; code: ZajelErrorCode; message: string } | null> {
  try {
    await p
    return null
  } catch (e) {
    if (!(e instanceof ZajelError)) throw e
    return { name: e.name, code: e.code, message: e.message }
  }
}

/** Two users register, befriend and exchange a message; returns what the receiver saw. */
async function chat(a: string, b: string) {
  const pw = 'correct horse battery staple'
  const sa = await ZajelClient.register(server, a, pw)
  const sb = await ZajelClient.register(server, b, pw)
  const ca = await ZajelClient.connect(server, sa.token)
  const cb = await ZajelClient.connect(server, sb.token)
  const events: ZajelEvent[] = []
  const got = new Promise<string>((resolve) =>
    cb.on((e) => {
      events.push(e)
      if (e.type === 'message') resolve(e.message.body)
    }),
  )
  await ca.requestFriend(b)
  await cb.acceptFriend(sa.user.id)
  const sent = await ca.send(sb.user.id, `hello ${b}, from another origin`)
  const body = await got
  const wrong = await errorOf(ca.send(sb.user.id, 'x'.repeat(100_000)))
  ca.close()
  cb.close()
  return { seq: sent.seq, body, wrong }
}

const api = {
  chat,
  login: (u: string, p: string, at = server) => errorOf(ZajelClient.login(at, u, p)),
}
;(window as unknown as { zajel: typeof api }).zajel = api
document.getElementById('status')!.textContent = 'ready'
