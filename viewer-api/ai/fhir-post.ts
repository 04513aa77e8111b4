import { Client } from 'fhir-kit-client';

/**
 * One POST of a request body already encoded and hashed, through fhir-kit-client (one client per
 * service base URL, kept between calls with its connections): the declared operation (`$name` or
 * `Type/$name`) or a plain resource endpoint, within a timeout. Used by the AI client in its own
 * thread, and by the de-identification workers for the bodies they made and keep (the held
 * bodies of deid-pool.ts), so that the call's HTTP work stays off the viewer's event loop.
 *
 * A non-2xx answer, or a 2xx whose body is not JSON, is thrown as fhir-kit-client throws it:
 * `{ response: { status, data }, config: { headers } }`. Across threads a failure goes as a
 * PostFailure (plain data) and is made such an error again (failureError).
 */
export interface PostTarget {
  baseUrl: string;
  operation: string;
  timeoutMs: number;
}

export interface PostAnswer {
  data: unknown;
  status: number;
  /** Size of the answer's body (its Content-Length, or its JSON's length). */
  bytes: number;
  /** Milliseconds of the HTTP exchange as timed in the thread that made it (a worker's). */
  ms?: number;
}

export class FhirPoster {
  private readonly clients = new Map<string, Client>();
  /** The body of each call in flight, by the call's own signal, for the request hook (see client). */
  private readonly outgoing = new WeakMap<AbortSignal, Uint8Array>();

  private client(baseUrl: string): Client {
    let c = this.clients.get(baseUrl);
    if (!c) {
      c = new Client({
        baseUrl,
        // fhir-kit-client sends a string as it is and serialises anything else; the body here is
        // already the exact bytes (encoded and hashed for the audit trail where it was made), so
        // its request hook, which sees and may change the final request, puts those bytes in.
        requestSigner: (_url, init) => {
          const bytes = init.signal ? this.outgoing.get(init.signal) : undefined;
          if (!bytes) throw new Error('a call to an AI service without its body');
          this.outgoing.delete(init.signal!);
          init.body = bytes as Uint8Array<ArrayBuffer>;
        },
      });
      this.clients.set(baseUrl, c);
    }
    return c;
  }

  async post(target: PostTarget, body: Uint8Array, headers: Record<string, string>, signal?: AbortSignal): Promise<PostAnswer> {
    // One controller for the timeout and the caller's signal, the timer cleared with the call
    // (AbortSignal.any with AbortSignal.timeout cost ~24 µs a call here, and left a timer pending
    // for the whole timeout after each call).
    const combined = new AbortController();
    const timer = setTimeout(() => combined.abort(new DOMException('no answer within the timeout', 'TimeoutError')), target.timeoutMs);
    const onAbort = () => combined.abort(signal!.reason);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    const client = this.client(target.baseUrl);
    // A redirect is never followed: the Bundle goes to the registered base URL or nowhere (and
    // fetch then keeps no copy of the request body for a second trip: less work per call).
    const options = { signal: combined.signal, headers: { ...headers, 'content-type': 'application/fhir+json' }, redirect: 'error' as const };
    const m = /^(?:([A-Z][A-Za-z]+)\/)?\$(.+)$/.exec(target.operation);
    // The request hook puts `body` in (see client); the client itself is given an empty text.
    this.outgoing.set(combined.signal, body);
    try {
      const data = m
        ? await client.operation({ name: m[2]!, ...(m[1] ? { resourceType: m[1] } : {}), method: 'POST', input: '' as never, options })
        : await client.request(target.operation, { method: 'POST', body: '' as never, options });
      const response = (data as Record<string, unknown> & { __response?: Response }).__response;
      const length = Number(response?.headers.get('content-length'));
      return { data, status: response?.status ?? 200, bytes: Number.isInteger(length) && length >= 0 ? length : Buffer.byteLength(JSON.stringify(data), 'utf8') };
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      this.outgoing.delete(combined.signal);
    }
  }
}

/** What the AI client reads of a failed POST (ai-client.ts, classify), as plain data. */
export interface PostFailure {
  name: string;
  message: string;
  /** The HTTP status of an answer that was not a success, with its body. */
  response?: { status: number; data: unknown };
  retryAfter?: string;
  cause?: { code?: string; message?: string };
  /** As PostAnswer.ms; the error made again carries it as `postMs`. */
  ms?: number;
}

export function failureOf(e: unknown, ms?: number): PostFailure {
  const x = (e ?? {}) as { name?: unknown; message?: unknown; response?: { status?: unknown; data?: unknown }; config?: { headers?: { get?: (h: string) => string | null } }; cause?: { code?: unknown; message?: unknown } };
  const status = x.response?.status;
  const data = x.response?.data;
  const retryAfter = x.config?.headers?.get?.('retry-after');
  return {
    name: typeof x.name === 'string' ? x.name : 'Error',
    message: typeof x.message === 'string' ? x.message : String(e),
    ...(typeof status === 'number' ? { response: { status, data: typeof data === 'string' || (data && typeof data === 'object') ? data : undefined } } : {}),
    ...(retryAfter ? { retryAfter } : {}),
    ...(x.cause && typeof x.cause === 'object'
      ? { cause: { ...(typeof x.cause.code === 'string' ? { code: x.cause.code } : {}), ...(typeof x.cause.message === 'string' ? { message: x.cause.message } : {}) } }
      : {}),
    ...(ms !== undefined ? { ms } : {}),
  };
}

/** The error fhir-kit-client or fetch would have thrown in this thread, from a PostFailure. */
export function failureError(f: PostFailure): Error {
  return Object.assign(new Error(f.message), {
    name: f.name,
    ...(f.response ? { response: f.response, config: { headers: new Headers(f.retryAfter ? { 'retry-after': f.retryAfter } : {}) } } : {}),
    ...(f.cause ? { cause: f.cause } : {}),
    ...(f.ms !== undefined ? { postMs: f.ms } : {}),
  });
}
