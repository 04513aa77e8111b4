import Router from '@koa/router';
import type { Context } from 'koa';
import { z } from 'zod';
import { readBody, readJson } from '../../viewer-api/http/body.js';
import { ExchangeError } from '../errors.js';
import { MAX_BLOB_BATCH_BYTES, MAX_MANIFEST_BATCH, type BackupService, type ManifestEntry } from './backup.service.js';

/** The upload protocol `/ingest/v1` (store/backup/PROTOCOL.md). */

const OpenBody = z.object({
  facilityId: z.string().min(1).max(32),
  clientSession: z.string().min(1).max(200),
  baseSnapshotId: z.string().min(1).max(100).nullish(),
});

const FileEntry = z
  .object({
    path: z.string().max(4096),
    size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
    mtime: z.number().int().min(-Number.MAX_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER),
    sha256: z
      .string()
      .regex(/^[0-9a-fA-F]{64}$/, 'must be 64 hex characters')
      .transform((s) => s.toLowerCase()),
  })
  .strict();
const DeletedEntry = z.object({ path: z.string().max(4096), deleted: z.literal(true) }).strict();
const ManifestBody = z.object({ entries: z.array(z.union([FileEntry, DeletedEntry])).max(MAX_MANIFEST_BATCH) });
const CommitBody = z.object({ entries: z.number().int().min(0) });

// 10,000 entries of paths up to a few hundred bytes.
const MANIFEST_LIMIT = 16 * 1024 * 1024;

export function uploadRouter(backup: BackupService): Router {
  const r = new Router({ prefix: '/ingest/v1' });
  const facilityOf = (ctx: Context) => backup.authenticate(ctx.get('authorization') || undefined);
  const noStore = (ctx: Context) => ctx.set('Cache-Control', 'no-store');

  r.post('/uploads', async (ctx) => {
    const facility = await facilityOf(ctx);
    const body = await readJson(ctx, OpenBody);
    const res = await backup.openUpload(facility, body);
    noStore(ctx);
    ctx.status = res.status;
    ctx.body = res.body;
  });

  r.post('/uploads/:uploadId/manifest', async (ctx) => {
    const facility = await facilityOf(ctx);
    const body = await readJson(ctx, ManifestBody, MANIFEST_LIMIT);
    noStore(ctx);
    ctx.body = await backup.addManifest(facility, ctx.params.uploadId!, body.entries as ManifestEntry[]);
  });

  r.post('/uploads/:uploadId/blobs', async (ctx) => {
    const facility = await facilityOf(ctx);
    if (!ctx.is('application/octet-stream')) {
      throw new ExchangeError('bad-request', 'expected Content-Type: application/octet-stream');
    }
    const body = await readBody(ctx, MAX_BLOB_BATCH_BYTES);
    noStore(ctx);
    ctx.body = await backup.addBlobs(facility, ctx.params.uploadId!, body);
  });

  r.post('/uploads/:uploadId/commit', async (ctx) => {
    const facility = await facilityOf(ctx);
    const body = await readJson(ctx, CommitBody);
    noStore(ctx);
    ctx.body = await backup.commit(facility, ctx.params.uploadId!, body.entries);
  });

  r.get('/uploads/:uploadId', async (ctx) => {
    const facility = await facilityOf(ctx);
    noStore(ctx);
    ctx.body = await backup.uploadState(facility, ctx.params.uploadId!);
  });

  r.delete('/uploads/:uploadId', async (ctx) => {
    const facility = await facilityOf(ctx);
    noStore(ctx);
    ctx.body = await backup.abort(facility, ctx.params.uploadId!);
  });

  return r;
}
