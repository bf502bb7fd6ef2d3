// "Sign in with <provider>" (OpenID Connect). The server runs the whole flow (docs/identity.md):
// this page only links to its start URL, and on the way back trades the HttpOnly session
// cookie the server set for the client's session (`POST /api/session`), stored where
// ZajelProvider reads it. The token never appears in a URL.
import type { Session } from '@zajel/client'

export interface Provider {
  id: string
  name: string
  /** Path on the server that starts the flow. */
  start_url: string
}

/** Query parameter the server's return link carries after a successful sign-in. */
const SIGNED_IN = 'signed_in'
/** Query parameter the server's error page adds to its "Back to the app" link. */
const ERROR = 'sign_in_error'
/** ZajelProvider's default `storageKey`. */
const SESSION_KEY = 'zajel.session'

/** The configured providers; none when the server has no OpenID Connect (404) or is away. */
export async function listProviders(serverUrl: string): Promise<Provider[]> {
  try {
    const r = await fetch(`${serverUrl}/api/auth/providers`)
    if (!r.ok) return []
    const body = (await r.json()) as { providers?: Provider[] }
    return body.providers ?? []
  } catch {
    return []
  }
}

/** Where a provider's button goes: the server's start URL, coming back to this page. */
export function startHref(serverUrl: string, p: Provider): string {
  const back = `${window.location.pathname}?${SIGNED_IN}=1`
  return `${serverUrl}${p.start_url}?return_to=${encodeURIComponent(back)}`
}

/** Removes `name` from the address bar; returns its value. */
function takeParam(name: string): string | null {
  const url = new URL(window.location.href)
  const value = url.searchParams.get(name)
  if (value === null) return null
  url.searchParams.delete(name)
  window.history.replaceState(window.history.state, '', url)
  return value
}

const TEXT: Record<string, string> = {
  consent_denied: 'Sign-in was cancelled at the provider. Nothing was changed; try again when you are ready.',
  invalid_state: 'That sign-in link has expired or was already used. Please start again.',
  invalid_id_token: 'The provider’s answer could not be verified. Please try again.',
  provider_unavailable: 'The sign-in provider is not answering right now. Try again in a moment.',
  unknown_provider: 'That sign-in provider is not configured here.',
  rate_limited: 'Too many sign-ins at once. Wait a moment and try again.',
}

let returnedError: string | null = null

/** Back from a provider (call once, before rendering): stores the cookie's session for
 * ZajelProvider, or keeps the error the server sent us back with for `signInError`. */
export async function returnFromProvider(serverUrl: string): Promise<void> {
  const code = takeParam(ERROR)
  if (code !== null) returnedError = TEXT[code] ?? 'Sign-in with the provider failed. Please try again.'
  if (takeParam(SIGNED_IN) === null) return
  try {
    const r = await fetch(`${serverUrl}/api/session`, {
      method: 'POST',
      credentials: 'include',
      headers: { 'Content-Type': 'application/json' },
      body: '{}',
    })
    if (r.ok) localStorage.setItem(SESSION_KEY, JSON.stringify((await r.json()) as Session))
  } catch {
    // Offline or the server went away: the sign-in screen shows, the person can retry.
  }
}


/** The sentence for the failed provider sign-in this page was opened with, if any. */
export function signInError(): string | null {
  return returnedError
}
