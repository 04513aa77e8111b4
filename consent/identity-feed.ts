import type { Db } from '../store/db.js';
import type { PatientRecord } from '../ingest/records/types.js';
import { pageCurrentDemographics } from '../store/records/demographics.repository.js';
import type { IdentityRecord, Sex } from './match.js';

/**
 * The identity feed: what each facility's current ADT-00 messages say about its patients goes to
 * the identity service, which the matcher then works on. Demographics come only from indexed,
 * unflagged, current messages (a cancelled or broken ADT-00 never describes a patient).
 */

const SEX: Record<string, Sex> = { male: 'M', female: 'F', other: 'O', unknown: 'U' };

/** What one ADT-00 says, in the matcher's terms (pure). Absent fields become empty strings. */
export function identityRecordOf(facilityId: string, localId: string, p: PatientRecord): IdentityRecord {
  const phone = p.phones.find((x) => x.use === 'PRN') ?? p.phones[0];
  return {
    facilityId,
    localId,
    familyKanji: p.name.kanji?.family ?? '',
    givenKanji: p.name.kanji?.given ?? '',
    familyKana: p.name.kana?.family ?? '',
    givenKana: p.name.kana?.given ?? '',
    birthDate: (p.birthDate ?? '').replace(/-/g, '').slice(0, 8),
    sex: SEX[p.sex ?? 'unknown'] ?? 'U',
    postalCode: p.address?.postalCode ?? '',
    address: p.address?.text ?? '',
    phone: phone?.number ?? '',
  };
}

/** The narrow part of the identity service the feed needs. */
export interface IdentitySink {
  /** Records one local patient and matches it against its block (review queue or auto-link). */
  observe(record: IdentityRecord): Promise<unknown>;
}

/**
 * Sends to the identity service what one index run of a facility learnt: the current ADT-00
 * versions that run added (new patients and changed details). Without `seq`, every current
 * description of the facility (a first load or a re-feed). Observing is an upsert, so a retried
 * job sends the same records again harmlessly. Returns how many were observed.
 */
export async function feedDemographics(db: Db, identity: IdentitySink, facilityId: string, seq?: number, pageSize = 1000): Promise<number> {
  let after = 0;
  let sent = 0;
  for (;;) {
    const page = await pageCurrentDemographics(db, facilityId, after, pageSize, seq);
    for (const d of page.items) {
      await identity.observe(identityRecordOf(d.facilityId, d.patientId, d.record));
      sent++;
    }
    if (page.done) return sent;
    after = page.lastId;
  }
}
