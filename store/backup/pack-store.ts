import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * Where pack objects live: immutable named objects, written once, read by range. The local
 * folder is the default; an S3-compatible backend implements the same few methods.
 * Names are `/`-separated relative names made by the blob store (e.g. `data/ab/ab12…`).
 */
export interface PackStore {
  /** Stores an object durably. Never overwrites: an existing name is left as it is. */
  put(name: string, data: Buffer): Promise<void>;
  /** Reads `length` bytes at `offset` (the whole object without a range). */
  get(name: string, range?: { offset: number; length: number }): Promise<Buffer>;
  /** Size in bytes, or undefined when the object does not exist. */
  stat(name: string): Promise<number | undefined>;
  /** Every object name under a prefix, with its size. */
  list(prefix: string): AsyncIterable<{ name: string; size: number }>;
  delete(name: string): Promise<void>;
  /** Releases open handles; safe to call twice. */
  close(): Promise<void>;
}

export class PackObjectMissing extends Error {
  override name = 'PackObjectMissing';
}

const NAME = /^[A-Za-z0-9_-]+(\/[A-Za-z0-9_.-]+)*$/;

function checkName(name: string): void {
  if (!NAME.test(name) || name.split('/').some((s) => s === '.' || s === '..')) {
    throw new Error(`invalid pack object name ${JSON.stringify(name)}`);
  }
}

/**
 * Packs as files in a local folder. A put writes a temporary file, fsyncs it, links it to its
 * final name (link fails if the name exists, so nothing is ever overwritten) and fsyncs the
 * folder: after put returns the object survives a crash, and a crash before leaves at most a
 * temporary file, never a partial object under its final name.
 */
export class LocalPackStore implements PackStore {
  private readonly handles = new Map<string, Promise<fsp.FileHandle>>();
  private static readonly MAX_HANDLES = 16;

  constructor(readonly root: string) {
    fs.mkdirSync(root, { recursive: true });
  }

  private file(name: string): string {
    checkName(name);
    return path.join(this.root, ...name.split('/'));
  }

  async put(name: string, data: Buffer): Promise<void> {
    const target = this.file(name);
    const dir = path.dirname(target);
    await fsp.mkdir(dir, { recursive: true });
    const tmp = path.join(dir, `.tmp-${randomBytes(8).toString('hex')}`);
    const fh = await fsp.open(tmp, 'wx', 0o640);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await fsp.link(tmp, target);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    } finally {
      await fsp.rm(tmp, { force: true });
    }
    const dh = await fsp.open(dir, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  }

  private async handle(name: string): Promise<fsp.FileHandle> {
    let opening = this.handles.get(name);
    if (opening) {
      // Most recently used last.
      this.handles.delete(name);
      this.handles.set(name, opening);
      return opening;
    }
    const file = this.file(name);
    opening = fsp.open(file, 'r').catch((e: NodeJS.ErrnoException) => {
      this.handles.delete(name);
      if (e.code === 'ENOENT') throw new PackObjectMissing(`pack object ${name} does not exist`);
      throw e;
    });
    this.handles.set(name, opening);
    if (this.handles.size > LocalPackStore.MAX_HANDLES) {
      const [oldest, old] = this.handles.entries().next().value as [string, Promise<fsp.FileHandle>];
      this.handles.delete(oldest);
      old.then((h) => h.close()).catch(() => {});
    }
    return opening;
  }

  async get(name: string, range?: { offset: number; length: number }): Promise<Buffer> {
    const fh = await this.handle(name);
    // readFile() on a cached handle starts at the handle's position, which the previous whole
    // read left at the end: read the whole object by position instead.
    if (!range) range = { offset: 0, length: (await fh.stat()).size };
    const buf = Buffer.allocUnsafe(range.length);
    let done = 0;
    while (done < range.length) {
      const { bytesRead } = await fh.read(buf, done, range.length - done, range.offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    // A short read means the object was truncated on disk: return what exists, the caller
    // checks lengths and hashes.
    return done === range.length ? buf : buf.subarray(0, done);
  }

  async stat(name: string): Promise<number | undefined> {
    try {
      return (await fsp.stat(this.file(name))).size;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  async *list(prefix: string): AsyncIterable<{ name: string; size: number }> {
    const start = prefix ? this.file(prefix) : this.root;
    const walk = async function* (dir: string, rel: string): AsyncGenerator<{ name: string; size: number }> {
      let entries: fs.Dirent[];
      try {
        entries = await fsp.readdir(dir, { withFileTypes: true });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw e;
      }
      entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (const e of entries) {
        if (e.name.startsWith('.tmp-')) continue;
        const full = path.join(dir, e.name);
        const name = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) yield* walk(full, name);
        else if (e.isFile()) yield { name, size: (await fsp.stat(full)).size };
      }
    };
    yield* walk(start, prefix);
  }

  async delete(name: string): Promise<void> {
    const fh = this.handles.get(name);
    if (fh) {
      this.handles.delete(name);
      await fh.then((h) => h.close()).catch(() => {});
    }
    await fsp.rm(this.file(name), { force: true });
  }

  async close(): Promise<void> {
    const all = [...this.handles.values()];
    this.handles.clear();
    await Promise.all(all.map((h) => h.then((x) => x.close()).catch(() => {})));
  }
}
