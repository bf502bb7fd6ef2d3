// @vitest-environment node
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { PROTOCOL_ERROR_CODES, toZajelError, ZajelError } from './errors.js';

describe('ZajelError', () => {
  it('knows exactly the codes of the Rust ErrorCode enum', () => {
    const rust = readFileSync(new URL('../../../zajel-core/src/error.rs', import.meta.url), 'utf8');
    const body = rust.slice(rust.indexOf('pub enum ErrorCode {'));
    const variants = [...body.slice(0, body.indexOf('\n}')).matchAll(/^\s{4}([A-Z]\w*),$/gm)].map(
      (m) => m[1].replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase(),
    );
    expect(variants.length).toBeGreaterThan(20);
    expect([...PROTOCOL_ERROR_CODES].sort()).toEqual(variants.sort());
  });

  it('normalizes what the wasm layer and the platform throw', () => {
    const rejected = toZajelError(
      Object.assign(new Error('rate_limited: slow down'), { code: 'rate_limited', retry_after_ms: 250 }),
    );
    expect(rejected).toBeInstanceOf(ZajelError);
    expect(rejected).toMatchObject({ code: 'rate_limited', retry_after_ms: 250 });

    const trace = toZajelError(
      Object.assign(
        new Error(
          'transport error: POST http://x/api/login: JsValue(TypeError: Failed to fetch\nTypeError: Failed to fetch\n    at http://x/zajel_wasm.js:1:2)',
        ),
        { code: 'transport' },
      ),
    );
    expect(trace.code).toBe('transport');
    expect(trace.message).toBe('transport error: POST http://x/api/login: Failed to fetch');

    expect(toZajelError(new TypeError('Failed to fetch')).code).toBe('transport');
    expect(toZajelError('boom')).toMatchObject({ code: 'error', message: 'boom' });
    expect(toZajelError(Object.assign(new Error('new'), { code: 'from_the_future' })).code).toBe(
      'unknown',
    );
  });
});
