import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../viewer-api/cli/main.js';
import { openDatabase } from '../store/db.js';
import { tempDir } from './support/tmp.js';

/** The consent commands, run in-process against an embedded database in a private folder. */
describe('hakobune links / consent / participation / disaster', () => {
  const tmp = tempDir();
  const saved = { dir: process.env.HAKOBUNE_DATA_DIR, url: process.env.DATABASE_URL, log: process.env.LOG_LEVEL };
  beforeAll(() => {
    process.env.HAKOBUNE_DATA_DIR = tmp.dir;
    delete process.env.DATABASE_URL;
    process.env.LOG_LEVEL = 'silent';
  });
  afterAll(() => {
    for (const [k, v] of [['HAKOBUNE_DATA_DIR', saved.dir], ['DATABASE_URL', saved.url], ['LOG_LEVEL', saved.log]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    tmp.remove();
  });

  async function run(...args: string[]): Promise<{ code: number; out: string; err: string }> {
    let out = '';
    let err = '';
    const o = vi.spyOn(process.stdout, 'write').mockImplementation((s) => ((out += String(s)), true));
    const e = vi.spyOn(process.stderr, 'write').mockImplementation((s) => ((err += String(s)), true));
    try {
      const code = await main(['node', 'hakobune', ...args]);
      return { code, out, err };
    } finally {
      o.mockRestore();
      e.mockRestore();
    }
  }

  it('enrols, shows history, and answers bad input with exit code 2', async () => {
    expect((await run('participation', 'set', 'F001', '--kind', 'hospital', '--discloses', 'true', '--views', 'true', '--by', 'admin', '--reason', 'joined')).code).toBe(0);
    const enrol = await run('links', 'enrol', 'F001', '0001234', '--by', 'clerk', '--evidence', 'insurance card', '--json');
    expect(enrol.code).toBe(0);
    const link = JSON.parse(enrol.out);
    expect(link).toMatchObject({ facilityId: 'F001', localId: '0001234', method: 'manual' });
    const history = JSON.parse((await run('links', 'history', link.regionalId, '--json')).out);
    expect(history.events.map((e: { action: string; evidence: string }) => [e.action, e.evidence])).toEqual([['link', 'insurance card']]);
    // No consent to withdraw: a conflict, exit 2, a message without a stack.
    const w = await run('consent', 'withdraw', link.regionalId, '--by', 'clerk', '--reason', 'phoned');
    expect(w.code).toBe(2);
    expect(w.err).toMatch(/no consent to withdraw/);
    expect((await run('participation', 'set', 'F002', '--kind', 'spa', '--discloses', 'true', '--views', 'true', '--by', 'a', '--reason', 'r')).code).toBe(2);
    expect((await run('disaster', 'declare', '--facilities', 'all', '--from', 'yesterday', '--to', '2026-01-01T00:00:00Z', '--by', 'op', '--reason', 'x')).code).toBe(2);
    expect((await run('links', 'split', link.regionalId, 'no-slash', '--by', 'a', '--reason', 'r')).err).toMatch(/FACILITY\/LOCALID/);
    // The matcher runs in this process, as a run of the run table (one at a time, listed over HTTP).
    const match = await run('links', 'match', '--by', 'operator', '--reason', 'first load', '--json');
    expect([match.code, match.err]).toEqual([0, '']);
    expect(JSON.parse(match.out)).toMatchObject({ runId: expect.stringMatching(/^MR-[0-9A-F]{16}$/), localPatients: 0, candidates: 0 });
    // While a run asked over HTTP waits for its job, the command line does not run another.
    const database = await openDatabase({ dataDir: tmp.dir, databaseUrl: undefined });
    const at = new Date();
    await database.db
      .insertInto('identity_match_run')
      .values({ id: 'MR-00000000000000B1', status: 'queued', reason: null, user_id: null, username: 'net', user_facility_id: 'F001', role: 'network_admin', phase: null, candidates: null, blocks_searched: null, blocks: null, auto_linked: null, queued: null, skipped: null, error: null, created_at: at, started_at: null, updated_at: at, finished_at: null })
      .execute();
    await database.close();
    const busy = await run('links', 'match');
    expect(busy.code).toBe(2);
    expect(busy.err).toMatch(/match run MR-00000000000000B1 is already queued/);
  }, 240_000); // every command opens the embedded database, on a loaded machine
});
