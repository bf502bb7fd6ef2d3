// The one error type every failed call rejects with: a stable `code` to match on and a short
// human message. Whatever the wasm layer or the platform throws (a JS TypeError from `fetch`,
// a message with a wasm stack trace) is normalized here, so no raw trace reaches an app.

/** The wire protocol's error codes (zajel-core's `ErrorCode`, docs/protocol.md). A unit test
 * keeps this list equal to the Rust enum. */
export const PROTOCOL_ERROR_CODES = [
  'bad_frame',
  'unknown_type',
  'invalid_field',
  'frame_too_large',
  'unsupported_version',
  'unauthenticated',
  'already_authenticated',
  'invalid_credentials',
  'invalid_username',
  'invalid_password',
  'username_taken',
  'rate_limited',
  'user_not_found',
  'cannot_befriend_self',
  'already_friends',
  'already_requested',
  'no_pending_request',
  'not_friends',
  'blocked',
  'already_blocked',
  'not_blocked',
  'conversation_not_found',
  'empty_body',
  'body_too_long',
  'invalid_idempotency_key',
  'invalid_cursor',
  'internal',
  'shutting_down',
  'unavailable',
  'unsupported_media_type',
  'not_found',
  'method_not_allowed',
  'unknown',
] as const;

/** Codes the client itself produces (no server involved or no answer from it). */
export const CLIENT_ERROR_CODES = [
  /** The client was closed before the call completed. */
  'closed',
  /** The connection dropped after a non-repeatable request was sent; its outcome is unknown. */
  'connection_lost',
  /** Network failure: the server is unreachable, or the browser refused the request (CORS). */
  'transport',
  /** An HTTP answer that was not the documented JSON. */
  'http',
  /** The server URL is not http(s):// or ws(s)://. */
  'invalid_url',
  /** A value passed to the client is invalid (e.g. not a user id). */
  'invalid_argument',
  /** The server answered something the protocol does not allow. */
  'protocol',
  /** The request was not answered in time. */
  'timeout',
  /** Anything else (a bug): the message says what. */
  'error',
] as const;

export type ProtocolErrorCode = (typeof PROTOCOL_ERROR_CODES)[number];
export type ClientErrorCode = (typeof CLIENT_ERROR_CODES)[number];
/** Every code a `ZajelError` can carry. */
export type ZajelErrorCode = ProtocolErrorCode | ClientErrorCode;

const KNOWN = new Set<string>([...PROTOCOL_ERROR_CODES, ...CLIENT_ERROR_CODES]);

/** What every failed call rejects with. */
export class ZajelError extends Error {
  override name = 'ZajelError';
  /** The stable code to match on; the message is for people and may change. */
  readonly code: ZajelErrorCode;
  /** For `rate_limited`: when the server suggests retrying. */
  readonly retry_after_ms?: number;

  constructor(code: ZajelErrorCode, message: string, retryAfterMs?: number) {
    super(message);
    this.code = code;
    if (retryAfterMs !== undefined) this.retry_after_ms = retryAfterMs;
  }
}

export function isZajelError(e: unknown): e is ZajelError {
  return e instanceof ZajelError;
}

// A message's first line, without wasm-bindgen's `JsValue(...)` debug wrapping: enough to say
// what failed, never a stack trace.
function firstLine(message: string): string {
  const line = message.split('\n')[0]?.trim() ?? '';
  const unwrapped = line.replace(/JsValue\((\w*Error: )?/g, '').replace(/\)+$/, '');
  return unwrapped.length > 300 ? `${unwrapped.slice(0, 300)}…` : unwrapped;
}

/** Turns anything thrown by the wasm layer or the platform into a `ZajelError`. */
export function toZajelError(e: unknown): ZajelError {
  if (e instanceof ZajelError) return e;
  if (e !== null && typeof e === 'object') {
    const { code, message, retry_after_ms } = e as {
      code?: unknown;
      message?: unknown;
      retry_after_ms?: unknown;
    };
    const text = firstLine(typeof message === 'string' ? message : String(e));
    if (typeof code === 'string') {
      const known: ZajelErrorCode = KNOWN.has(code) ? (code as ZajelErrorCode) : 'unknown';
      return new ZajelError(
        known,
        text,
        typeof retry_after_ms === 'number' ? retry_after_ms : undefined,
      );
    }
    // A platform error escaping the wasm layer (e.g. `TypeError: Failed to fetch`).
    if (e instanceof TypeError) return new ZajelError('transport', text);
    return new ZajelError('error', text);
  }
  return new ZajelError('error', firstLine(String(e)));
}

/** Runs `f`, rejecting with a `ZajelError` whatever it throws. */
export async function guard<T>(f: () => Promise<T> | T): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw toZajelError(e);
  }
}
