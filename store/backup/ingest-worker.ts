import { createHash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import { compressBlob } from './compression.js';
import type { SliceReply, SliceRequest } from './ingest-pool.js';

/**
 * The body of a blob ingest worker (ingest-pool.ts): checks every frame of a slice of a blob
 * batch against its SHA-256 and compresses the frames asked for, all in one message each way.
 */
if (!parentPort) throw new Error('ingest-worker.ts runs only as a worker thread of ingest-pool.ts');
const port = parentPort;

port.on('message', (req: SliceRequest) => {
  let reply: SliceReply;
  try {
    reply = handle(req);
  } catch (e) {
    reply = { id: req.id, error: e instanceof Error ? (e.stack ?? e.message) : String(e) };
  }
  const transfer = 'out' in reply ? [reply.out.buffer as ArrayBuffer] : [];
  port.postMessage(reply, transfer);
});

function handle(req: SliceRequest): SliceReply {
  const bytes = Buffer.from(req.bytes);
  const n = req.starts.length;
  const dict = req.dictionary ? { id: req.dictionary.id, hash: '', content: Buffer.from(req.dictionary.content) } : undefined;
  // Every frame is checked first: one bad frame rejects the batch before any work is kept.
  for (let i = 0; i < n; i++) {
    const start = req.starts[i]!;
    const data = bytes.subarray(start + 36, start + 36 + req.lengths[i]!);
    if (!createHash('sha256').update(data).digest().equals(bytes.subarray(start, start + 32))) return { id: req.id, bad: i };
  }
  const parts: Buffer[] = [];
  const ends = new Int32Array(n);
  const codecs = new Int8Array(n);
  const dictIds = new Int32Array(n);
  let at = 0;
  for (let i = 0; i < n; i++) {
    if (req.compress[i]) {
      const start = req.starts[i]!;
      const c = compressBlob(bytes.subarray(start + 36, start + 36 + req.lengths[i]!), dict);
      parts.push(c.data);
      at += c.data.length;
      codecs[i] = c.codec;
      dictIds[i] = c.dictionaryId ?? -1;
    }
    ends[i] = at;
  }
  const out = new Uint8Array(at);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return { id: req.id, out, ends, codecs, dictIds };
}
