import type { Context } from 'koa';
import type { ZodType } from 'zod';
import { ExchangeError, badRequest } from '../../store/errors.js';

/** Reads the raw request body, refusing more than `limit` bytes before it is all received. */
export async function readBody(ctx: Context, limit: number): Promise<Buffer> {
  const declared = Number(ctx.get('content-length') || NaN);
  if (Number.isFinite(declared) && declared > limit) {
    throw new ExchangeError('payload-too-large', `request body over ${limit} bytes`, { limit });
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      ctx.req.destroy();
      throw new ExchangeError('payload-too-large', `request body over ${limit} bytes`, { limit });
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

/** Reads a JSON body (at most `limit` bytes) and validates it; every failure is a 400 that says why. */
export async function readJson<T>(ctx: Context, schema: ZodType<T>, limit = 1 << 20): Promise<T> {
  if (!ctx.is('application/json', 'application/*+json')) {
    throw new ExchangeError('bad-request', 'expected a JSON body (Content-Type: application/json)');
  }
  const raw = await readBody(ctx, limit);
  let value: unknown;
  try {
    value = JSON.parse(raw.toString('utf8'));
  } catch {
    throw badRequest('the body is not valid JSON');
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const problems = parsed.error.issues.slice(0, 20).map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`);
    throw badRequest(`invalid request body: ${problems.join('; ')}`, { problems });
  }
  return parsed.data;
}
