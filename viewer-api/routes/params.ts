import type { Context } from 'koa';
import { z } from 'zod';
import { badRequest } from '../../store/errors.js';
import { CATEGORIES, type Category } from '../../consent/categories.js';
import { VIEWER_PURPOSES } from '../gate/gate.js';

/** Query-string and path validation shared by the JSON and FHIR endpoints: anything else is a 400. */
export const REGIONAL_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const FACILITY = /^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/;
const DATE = /^\d{4}-\d{2}-\d{2}$/;

function realDate(s: string): boolean {
  const t = Date.parse(`${s}T00:00:00Z`);
  return !Number.isNaN(t) && new Date(t).toISOString().slice(0, 10) === s;
}

const date = z.string().regex(DATE, 'a date is YYYY-MM-DD').refine(realDate, 'not a calendar date');

export const TimelineQuery = z
  .object({
    category: z
      .string()
      .transform((s) => s.split(','))
      .pipe(z.array(z.enum(CATEGORIES)).min(1).max(CATEGORIES.length))
      .optional(),
    facility: z.string().regex(FACILITY, 'a facility id is letters, digits, _ and -').optional(),
    from: date.optional(),
    to: date.optional(),
    history: z.enum(['true', 'false']).transform((v) => v === 'true').optional(),
    limit: z.coerce.number().int().min(1).max(200).default(50),
    cursor: z.string().max(200).regex(/^[A-Za-z0-9_-]+$/).optional(),
    purpose: z.enum(VIEWER_PURPOSES).default('treatment'),
  })
  .strict();

/** Parses the query string; a repeated parameter (an array) is refused rather than guessed at. */
export function parseQuery<T>(ctx: Context, schema: z.ZodType<T>): T {
  const raw: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(ctx.query)) {
    if (Array.isArray(v)) throw badRequest(`parameter ${k} is given more than once`);
    raw[k] = v;
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.slice(0, 10).map((i) => `${i.path.join('.') || '(query)'}: ${i.message}`);
    throw badRequest(`invalid query: ${problems.join('; ')}`);
  }
  return parsed.data;
}

/** The value when it is a well-formed regional patient id, else undefined. */
export function validRegionalId(value: string | undefined): string | undefined {
  return value && REGIONAL_ID.test(value) ? value : undefined;
}

export function regionalIdParam(value: string | undefined): string {
  if (!value || !REGIONAL_ID.test(value)) throw badRequest('a patient id is 1-64 letters, digits, ".", "_" or "-"');
  return value;
}

export type { Category };
