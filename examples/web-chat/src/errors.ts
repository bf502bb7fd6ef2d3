// What the user reads when something fails: one sentence per error code, never the raw code or
// a stack trace. Unknown codes fall back to a generic sentence (the code stays in the title
// attribute for bug reports).
import { toZajelError, type ZajelErrorCode } from '@zajel/client'

const TEXT: Partial<Record<ZajelErrorCode, string>> = {
  invalid_credentials: 'Wrong username or password.',
  invalid_username:
    'Usernames are 3–32 characters: letters, digits, “_”, “.” or “-”, starting with a letter or digit.',
  invalid_password: 'Passwords need 8 to 128 characters.',
  username_taken: 'That username is taken. Try another one.',
  unauthenticated: 'Your session has ended. Please log in again.',
  rate_limited: 'That was a lot at once. Wait a moment and try again.',
  user_not_found: 'There is nobody with that username.',
  cannot_befriend_self: 'That’s you! Add someone else.',
  already_friends: 'You are already friends.',
  already_requested: 'You already asked; waiting for them to accept.',
  no_pending_request: 'That request is no longer pending.',
  not_friends: 'You can only message friends.',
  blocked: 'You can’t contact this person.',
  already_blocked: 'You already blocked this person.',
  not_blocked: 'This person is not blocked.',
  conversation_not_found: 'This conversation is not available.',
  empty_body: 'Type a message first.',
  body_too_long: 'This message is too long. Shorten it or split it into several.',
  frame_too_large: 'This is too large to send.',
  internal: 'Something went wrong on the server. Try again.',
  shutting_down: 'The server is restarting. Try again in a moment.',
  unavailable: 'The server is busy. Try again in a moment.',
  transport: 'Can’t reach the server. Check your connection.',
  timeout: 'The server took too long to answer. Try again.',
  connection_lost: 'The connection dropped before the server answered. Check and try again.',
  closed: 'Not connected.',
}

/** A sentence for people; `fallback` when the code has none. */
export function friendly(e: unknown, fallback = 'Something went wrong. Try again.'): string {
  return TEXT[toZajelError(e).code] ?? fallback
}
