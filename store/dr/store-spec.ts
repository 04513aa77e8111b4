import path from 'node:path';
import { badRequest } from '../errors.js';
import { LocalPackStore, type PackStore } from '../backup/pack-store.js';
import { S3PackStore } from './s3-pack-store.js';

/**
 * A second site's store, named on the command line:
 *   /path/to/folder or file:/path/to/folder   a folder (a mounted disk, removable media)
 *   s3://bucket[/prefix][?endpoint=URL&region=R]   an S3-compatible bucket; credentials from
 *                                                 the AWS SDK's default chain (AWS_ACCESS_KEY_ID…)
 */
export type StoreSpec = { kind: 'folder'; dir: string } | { kind: 's3'; bucket: string; prefix: string; endpoint: string | undefined; region: string };

export function parseStoreSpec(spec: string): StoreSpec {
  const s = spec.trim();
  if (s.startsWith('s3://')) {
    let url: URL;
    try {
      url = new URL(s);
    } catch {
      throw badRequest(`"${spec}" is not a store: s3://bucket[/prefix][?endpoint=URL&region=R]`);
    }
    const bucket = url.hostname;
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) throw badRequest(`"${bucket}" is not an S3 bucket name`);
    const prefix = decodeURIComponent(url.pathname).replace(/^\/+|\/+$/g, '');
    if (prefix && !/^[A-Za-z0-9_-]+(\/[A-Za-z0-9_.-]+)*$/.test(prefix)) throw badRequest(`"${prefix}" is not a key prefix (like site-b/packs)`);
    const endpoint = url.searchParams.get('endpoint') ?? undefined;
    if (endpoint !== undefined && !/^https?:\/\/[^/]+/.test(endpoint)) throw badRequest(`endpoint "${endpoint}" is not an http(s) URL`);
    for (const k of url.searchParams.keys()) if (k !== 'endpoint' && k !== 'region') throw badRequest(`unknown store option "${k}" (endpoint, region)`);
    return { kind: 's3', bucket, prefix, endpoint, region: url.searchParams.get('region') ?? 'us-east-1' };
  }
  const dir = s.startsWith('file:') ? s.slice('file:'.length) : s;
  if (!dir || /^[a-z][a-z0-9+.-]*:\/\//i.test(dir)) throw badRequest(`"${spec}" is not a store: give a folder, file:/folder or s3://bucket/prefix`);
  return { kind: 'folder', dir: path.resolve(dir) };
}

export function openStoreSpec(spec: StoreSpec): PackStore {
  if (spec.kind === 'folder') return new LocalPackStore(spec.dir);
  return new S3PackStore({ bucket: spec.bucket, prefix: spec.prefix, endpoint: spec.endpoint, region: spec.region });
}

export function describeStoreSpec(spec: StoreSpec): string {
  return spec.kind === 'folder' ? spec.dir : `s3://${spec.bucket}/${spec.prefix}${spec.endpoint ? ` at ${spec.endpoint}` : ''}`;
}
