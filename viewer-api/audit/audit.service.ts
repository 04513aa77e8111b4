import type { Db } from '../../store/db.js';
import { ChainVerifier, type ChainReport } from './audit.chain.js';
import type { AuditInput } from './audit.entry.js';
import { appendAudit, readAuditHead, readAuditPage } from './audit.repository.js';

export type Clock = () => number;

/** The narrow interface the rest of the viewer uses to leave a trace. */
export interface AuditLog {
  record(input: AuditInput): Promise<void>;
}

export function createAuditLog(db: Db, clock: Clock): AuditLog {
  return {
    async record(input) {
      await appendAudit(db, input, new Date(clock()));
    },
  };
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
