import type { Db } from '../../store/db.js';
import { ChainVerifier, type AuditHead, type ChainReport } from './audit.chain.js';
import { entryBody, type AuditInput, type EntryBody } from './audit.entry.js';
import { appendAuditBatch, readAuditHead, readAuditPage, type AuditCompanion, type CompanionWrites } from './audit.repository.js';
import { grouped } from '../../store/group.js';

export type Clock = () => number;

/** The narrow interface the rest of the viewer uses to leave a trace. */
export interface AuditLog {
  record(input: AuditInput): Promise<void>;
  /**
   * Records the entry and `item`'s write (see AuditCompanion) in one statement and one commit:
   * the write is seen only with its trace, and its caller waits for one commit, not two.
   */
  recordWith<T>(input: AuditInput, companion: AuditCompanion<T>, item: T): Promise<void>;
}

export type { AuditCompanion };

/** Most entries one append statement carries (a bound on the statement's size). */
const MAX_BATCH = 256;
/** Appends tried before giving up when the head keeps moving (see appendAll). */
const MAX_ATTEMPTS = 50;

/**
 * Group commit (store/group.ts): entries recorded while an append is in flight wait and go
 * together in the next one, chained in the order they were recorded. One statement and one commit
 * serve many requests, instead of one locked transaction each (the chain's head row serialises
 * every writer). Each record() still resolves only once its own entry is committed, so a response
 * never leaves before its trace is durable; a failed append rejects every entry of its batch
 * (it may have committed: running it again could chain its entries twice).
 */
export function createAuditLog(db: Db, clock: Clock): AuditLog {
  // The head as this process last wrote or read it. Another process appending moves the real one;
  // the append then writes nothing and answers the head it found, after which the batch goes again.
  let head: AuditHead | undefined;

  interface Item {
    body: EntryBody;
    with?: { companion: AuditCompanion<unknown>; item: unknown };
  }

  async function appendAll(items: Item[]): Promise<void> {
    const bodies = items.map((i) => i.body);
    const writes = new Map<AuditCompanion<unknown>, CompanionWrites>();
    for (const i of items) {
      if (!i.with) continue;
      const w = writes.get(i.with.companion) ?? { companion: i.with.companion, items: [] };
      w.items.push(i.with.item);
      writes.set(i.with.companion, w);
    }
    for (let attempt = 1; ; attempt++) {
      head ??= await readAuditHead(db);
      const done = await appendAuditBatch(db, head, bodies, [...writes.values()]);
      if ('entries' in done) {
        head = done.head;
        return;
      }
      // Another process moved the head: chain after the head the append found (read again if none).
      head = done.moved;
      // Other writers move the head now and then; a head that never matches (its row removed or
      // rewritten under the exchange) is an error, not a reason to retry for ever.
      if (attempt >= MAX_ATTEMPTS) throw new Error(`the audit head moved under each of ${MAX_ATTEMPTS} appends; the trail needs checking`);
    }
  }

  /** Runs an append; the head is unknown after a failure (the statement may or may not have committed). */
  async function appendOrForget(items: Item[]): Promise<void> {
    try {
      await appendAll(items);
    } catch (e) {
      head = undefined;
      throw e;
    }
  }

  const append = grouped<Item, { failed: unknown } | undefined>(
    async (items) => {
      try {
        await appendOrForget(items);
        return items.map(() => undefined);
      } catch (e) {
        // A statement PostgreSQL refused (an ERROR: its transaction rolled back, nothing
        // committed) can safely go again: one entry at a time, in order, so that the one whose
        // companion write the database refuses (a request for a service removed meanwhile) fails
        // alone. Any other failure (a lost connection: the commit is unknown) fails the batch.
        if (items.length === 1 || !refused(e)) throw e;
        const out: ({ failed: unknown } | undefined)[] = [];
        for (const item of items) out.push(await appendOrForget([item]).then(() => undefined, (failed: unknown) => ({ failed })));
        return out;
      }
    },
    // The entries of one turn of the event loop go together (the requests a statement just
    // answered record theirs in the same turn), not the first alone and the rest after it.
    { maxGroup: MAX_BATCH, retryEach: false, atTurnEnd: true },
  );

  const enter = (input: AuditInput, with_?: Item['with']): Promise<void> => {
    let body: EntryBody;
    try {
      // An entry that cannot be built (a detail JSON cannot carry) fails alone, not its batch.
      body = entryBody(input, new Date(clock()));
    } catch (e) {
      return Promise.reject(e);
    }
    return append(with_ ? { body, with: with_ } : { body }).then((r) => {
      if (r) throw r.failed;
    });
  };

  return {
    record: (input) => enter(input),
    recordWith: (input, companion, item) => enter(input, { companion: companion as AuditCompanion<unknown>, item }),
  };
}

/** An error PostgreSQL answered for the statement (so its transaction was rolled back), not a lost connection. */
function refused(e: unknown): boolean {
  const x = e as { severity?: unknown; code?: unknown } | null;
  return !!x && typeof x === 'object' && x.severity === 'ERROR' && typeof x.code === 'string' && /^[0-9A-Z]{5}$/.test(x.code);
}

/**
 * Recomputes the whole chain, page by page, and compares its end with the head row. It reads in
 * one REPEATABLE READ transaction: head and entries come from the same snapshot, so entries
 * appended while the check runs are neither half-seen nor mistaken for insertions.
 */
export async function verifyAuditChain(db: Db, pageSize = 5000): Promise<ChainReport> {
  return db
    .transaction()
    .setIsolationLevel('repeatable read')
    .execute(async (trx) => {
      const head = await readAuditHead(trx);
      const verifier = new ChainVerifier();
      let after = 0;
      for (;;) {
        const page = await readAuditPage(trx, after, pageSize);
        if (page.length === 0) break;
        if (!page.every((row) => verifier.push(row))) break;
        after = page[page.length - 1]!.seq;
      }
      return verifier.finish(head);
    });
}
