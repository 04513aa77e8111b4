import { parentPort } from 'node:worker_threads';
import type { SliceReply, SliceRequest } from './read-pool.js';
import { readSerialised, type SerialisedOutcome } from './read.js';

/** The body of a record reading worker (read-pool.ts): reads one slice of a page per message. */
if (!parentPort) throw new Error('read-worker.ts runs only as a worker thread of read-pool.ts');
const port = parentPort;

port.on('message', (req: SliceRequest) => {
  let reply: SliceReply;
  try {
    const all = new Uint8Array(req.bytes);
    const outcomes: SerialisedOutcome[] = new Array(req.paths.length);
    let start = 0;
    for (let i = 0; i < req.paths.length; i++) {
      const end = req.ends[i]!;
      outcomes[i] = readSerialised({ facilityId: req.facilityId, path: req.paths[i]!, sha256: req.sha256s[i]!, bytes: all.subarray(start, end) });
      start = end;
    }
    reply = { id: req.id, outcomes };
  } catch (e) {
    reply = { id: req.id, error: e instanceof Error ? (e.stack ?? e.message) : String(e) };
  }
  port.postMessage(reply);
});
