import type { Db } from '../../store/db.js';
import { notFound } from '../../store/errors.js';
import { findFacility } from '../../store/backup/backup.repository.js';
import { findRun, publishedState, qualityReport, type QualityReport } from '../../store/records/records.repository.js';

/**
 * A facility's data-quality report as `hakobune quality` and `GET /api/facilities/{id}/quality`
 * give it: of the files one indexed snapshot brought, or (without a snapshot) of the facility's
 * published state. An unknown facility, a snapshot of another facility, one not indexed (yet)
 * or superseded, and a facility with nothing indexed are each a 404 that says which.
 */
export async function facilityQualityReport(db: Db, facilityId: string, snapshotId: string | undefined, limit: number): Promise<QualityReport> {
  if (!(await findFacility(db, facilityId))) throw notFound(`no facility ${facilityId}`);
  if (snapshotId) {
    const run = await findRun(db, snapshotId);
    if (!run || run.facilityId !== facilityId) throw notFound(`snapshot ${snapshotId} of facility ${facilityId} has not been indexed`);
    if (run.state !== 'done') throw notFound(`snapshot ${snapshotId} is ${run.state === 'running' ? 'still being indexed' : 'superseded by a newer indexed snapshot'}`);
  } else if (!(await publishedState(db, facilityId))?.published_snapshot_id) {
    throw notFound(`facility ${facilityId} has no indexed snapshot yet`);
  }
  return qualityReport(db, facilityId, snapshotId, limit);
}
