import { createHash } from 'node:crypto';
import Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import { z } from 'zod';
import { badRequest, ExchangeError } from '../../store/errors.js';
import { decodeIso2022jp } from '../../ingest/hl7/decode.js';
import { sniffContentType } from '../../ingest/cda/cda.js';
import type { ClinicalRecord, DocumentRecord } from '../../ingest/records/types.js';
import type { AuthService } from '../auth/auth.service.js';
import { recordHead, VIEWER_PURPOSES } from '../gate/gate.js';
import type { RecordDetail, RecordGate, RecordHandle } from '../gate/record-gate.js';
import { principalOf, requireSession } from './session.js';
import { parseQuery } from './params.js';

/**
 * One record by its id: its detail, its original message, a document's file. Every read passes
 * the record gate (viewer-api/gate/record-gate.ts); a record the caller may not see answers
 * exactly like one that does not exist.
 */

/** The HL7 v2 (ER7) media type used in practice; SS-MIX2 messages are ISO-2022-JP. */
export const HL7_V2_RAW = 'x-application/hl7-v2+er7; charset=ISO-2022-JP';

const RECORD_ID = /^[1-9][0-9]{0,15}$/;

export function recordIdParam(value: string | undefined): number {
  if (!value || !RECORD_ID.test(value) || !Number.isSafeInteger(Number(value))) throw badRequest('a record id is a positive whole number');
  return Number(value);
}

const PurposeQuery = z.object({ purpose: z.enum(VIEWER_PURPOSES).default('treatment') }).strict();
const OriginalQuery = PurposeQuery.extend({ format: z.enum(['text', 'raw']).default('text') }).strict();

/** The file name of a record's source file (the last part of its path). */
function fileName(r: RecordDetail): string {
  return r.path.split('/').pop() || `record-${r.id}`;
}

function documentOf(r: RecordDetail): DocumentRecord | undefined {
  const c = (r.content as ClinicalRecord | null)?.content;
  return c?.kind === 'document' ? c : undefined;
}

/** The media type of a stored file, from its bytes (as the indexer sniffed it), with the XML charset. */
function mediaTypeOf(r: RecordDetail, bytes: Buffer): string {
  if (!r.path.startsWith('extended/')) return HL7_V2_RAW;
  const type = sniffContentType(fileName(r), bytes);
  if (type !== 'application/xml') return type;
  return `text/xml; charset=${xmlCharset(bytes)}`;
}

/** The encoding an XML declaration states (XML 1.0 §4.3.3); UTF-8 when it states none. */
export function xmlCharset(bytes: Buffer): string {
  const head = bytes.subarray(0, 200).toString('latin1');
  const m = /^\uFEFF?\s*<\?xml[^>]*?\sencoding\s*=\s*["']([A-Za-z][A-Za-z0-9._-]{0,39})["']/.exec(head);
  return (m?.[1] ?? 'utf-8').toLowerCase();
}

function contentDisposition(name: string): string {
  const ascii = name.replace(/[^A-Za-z0-9._-]/g, '_');
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(name)}`;
}

function sendFile(ctx: Context, bytes: Buffer, type: string, name: string): void {
  ctx.set('Content-Type', type);
  ctx.set('Content-Disposition', contentDisposition(name));
  // RFC 9530: the SHA-256 of exactly these bytes (the hash the backup store names them by).
  ctx.set('Repr-Digest', `sha-256=:${createHash('sha256').update(bytes).digest('base64')}:`);
  ctx.body = bytes;
  ctx.type = type;
}

export function detailBody(r: RecordDetail) {
  const doc = documentOf(r);
  const attachment = doc?.attachments[0];
  const { id, ...head } = recordHead(r);
  return {
    id,
    patient: r.regionalId,
    ...head,
    status: r.condition === '0' ? 'cancelled' : r.condition === '2' ? 'superseded' : 'current',
    basis: r.basis,
    sha256: r.sha256,
    content: r.content,
    document: doc
      ? {
          title: doc.title ?? null,
          contentType: attachment ? attachment.contentType : 'text/xml',
          size: attachment ? attachment.size : null,
          name: r.path.split('/').pop() ?? null,
        }
      : null,
    links: {
      self: `/api/records/${r.id}`,
      original: `/api/records/${r.id}/original`,
      ...(doc ? { content: `/api/records/${r.id}/content` } : {}),
    },
  };
}

/**
 * Points a DocumentReference made from a record at the file the viewer serves: the stored
 * attachment's `urn:hakobune:blob:` address becomes `/api/records/{id}/content`, and a CDA
 * document (whose narrative is inline) gains a link to its XML.
 */
export function linkDocumentContent<T extends { resourceType: string; [k: string]: unknown }>(res: T, recordId: number): T {
  if (res.resourceType !== 'DocumentReference') return res;
  const url = `/api/records/${recordId}/content`;
  const content = Array.isArray(res.content) ? (res.content as Array<{ attachment?: Record<string, unknown> }>) : [];
  let linked = false;
  const out: Array<{ attachment?: Record<string, unknown> }> = content.map((c) => {
    if (typeof c.attachment?.url !== 'string' || !c.attachment.url.startsWith('urn:hakobune:blob:')) return c;
    linked = true;
    return { ...c, attachment: { ...c.attachment, url } };
  });
  if (!linked) out.unshift({ attachment: { contentType: 'text/xml', url, title: 'CDA document' } });
  return { ...res, content: out };
}

export function recordsRouter(deps: { auth: AuthService; records: RecordGate; hygiene: Middleware }): Router {
  const r = new Router({ prefix: '/api/records' });
  r.use(deps.hygiene);
  r.use(requireSession(deps.auth));

  const open = (ctx: Context, action: 'record.read' | 'record.original' | 'record.content', purpose: (typeof VIEWER_PURPOSES)[number]): Promise<RecordHandle> =>
    deps.records.open(principalOf(ctx), { recordId: recordIdParam(ctx.params.id), purpose, endpoint: `GET ${ctx.path}`, action });

  r.get('/:id', async (ctx) => {
    const q = parseQuery(ctx, PurposeQuery);
    const h = await open(ctx, 'record.read', q.purpose);
    ctx.body = detailBody(h.record);
  });

  r.get('/:id/original', async (ctx) => {
    const q = parseQuery(ctx, OriginalQuery);
    const h = await open(ctx, 'record.original', q.purpose);
    const bytes = await h.bytes();
    const type = mediaTypeOf(h.record, bytes);
    if (q.format === 'raw') {
      sendFile(ctx, bytes, type, fileName(h.record));
      return;
    }
    let text: string;
    if (type === HL7_V2_RAW) {
      const d = decodeIso2022jp(bytes);
      if (!d.ok) throw new ExchangeError('unprocessable', `the stored message is not valid ISO-2022-JP at byte ${d.byteOffset}; ask for format=raw`);
      // HL7 v2 ends segments with a bare CR, which a terminal shows as one overwritten line;
      // text/plain breaks lines with CRLF, so each segment reads as a line (raw keeps the bytes).
      text = d.text.replace(/\r(?!\n)/g, '\r\n');
    } else if (type.startsWith('text/xml; charset=utf-8')) {
      try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
      } catch {
        throw new ExchangeError('unprocessable', 'the stored document is not valid UTF-8; ask for format=raw');
      }
    } else {
      throw badRequest(`the original is a ${type.split(';')[0]} file, not text; ask for format=raw`);
    }
    ctx.type = 'text/plain; charset=utf-8';
    ctx.body = text;
  });

  r.get('/:id/content', async (ctx) => {
    const q = parseQuery(ctx, PurposeQuery);
    const h = await open(ctx, 'record.content', q.purpose);
    const bytes = await h.bytes();
    sendFile(ctx, bytes, mediaTypeOf(h.record, bytes), fileName(h.record));
  });

  return r;
}
