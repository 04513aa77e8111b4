import type { Db } from '../../store/db.js';
import type { AuditLog } from '../audit/audit.service.js';
import type { AuditInput } from '../audit/audit.entry.js';
import { appendAuditBatchIn } from '../audit/audit.repository.js';

/**
 * The audit trail of AI requests with group commit: entries recorded while an append is in
 * progress are written together in the next one (one hold of the chain's head lock, one
 * multi-row insert). Under load this turns hundreds of transactions queueing on the head lock,
 * each holding a database connection, into a few. `record` still resolves only once its entry
 * is committed, so an outcome is never visible before its trace; entries keep the order of
 * their `record` calls.
 */
export function createBatchedAuditLog(db: Db, clock: () => number, opts: { maxBatch?: number } = {}): AuditLog {
  const maxBatch = opts.maxBatch ?? 500;
  let waiting: { input: AuditInput; at: Date; resolve: () => void; reject: (e: unknown) => void }[] = [];
  let writing = false;

  async function drain(): Promise<void> {
    writing = true;
    try {
      while (waiting.length) {
        const batch = waiting.slice(0, maxBatch);
        waiting = waiting.slice(batch.length);
        try {
          await db.transaction().execute((trx) => appendAuditBatchIn(trx, batch));
          for (const b of batch) b.resolve();
        } catch (e) {
          for (const b of batch) b.reject(e);
        }
      }
    } finally {
      writing = false;
    }
  }

  return {
    record(input) {
      return new Promise<void>((resolve, reject) => {
        waiting.push({ input, at: new Date(clock()), resolve, reject });
        if (!writing) void drain();
      });
    },
  };
}
