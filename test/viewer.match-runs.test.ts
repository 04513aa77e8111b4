import { randomBytes } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_REDIS_URL } from './support/postgres.js';
import { enrol, get, lastAudit, signIn, startViewer, testQueues, tokenFor, type Backend, type TestUser, type ViewerHarness } from './viewer.support.js';

/**
 * The matcher over the region as a background job: the request answers 202 with the run, the
 * candidate search runs in a worker thread (the viewer keeps answering meanwhile), one run at a
 * time across the network (409 naming it), a run left by a dead process is abandoned after ten
 * minutes of silence, and a worker that dies fails the run with a message for people.
 */

type RunOut = {
  id: string;
  status: 'queued' | 'running' | 'done' | 'failed';
  progress: { phase: string | null; localPatients: number; blocksSearched: number | null; blocks: number | null; candidates: number | null; applied: number };
  summary: { localPatients: number; candidates: number; autoLinked: number; queued: number; skipped: number } | null;
  error: string | null;
};

/**
 * `n` local patients of facility FX in blocks of 500 sharing a birth date and sex, with given
 * names that differ: every block is searched in full (500 x 499 / 2 pairs) and few pairs score.
 */
async function loadPatients(h: ViewerHarness, n: number): Promise<void> {
  await sql`
    insert into identity_local_patient
      (facility_id, local_id, family_kanji, given_kanji, family_kana, given_kana, birth_date, sex, postal_code, address, phone, kana_key, kanji_key, updated_at)
    select 'FX', 'P' || i, '佐藤', translate(substr(md5(i::text), 1, 6), '0123456789abcdef', '一二三四五六七八九十百千万丈与丑'),
      'サトウ', translate(substr(md5(i::text), 7, 6), '0123456789abcdef', 'アイウエオカキクケコサシスセソタ'),
      to_char(date '1940-01-01' + (i / 500), 'YYYYMMDD'), 'F', '', '', '', '', '', now()
    from generate_series(1, ${n}) as i`.execute(h.exchange.db);
}

function harness(backend: Backend, overrides: Parameters<typeof startViewer>[1] = () => ({})) {
  const s = { h: undefined as unknown as ViewerHarness, u: {} as Record<string, TestUser>, tokens: {} as Record<string, string> };
  beforeAll(async () => {
    s.h = await startViewer(backend, overrides);
    await signIn(s.h, [['FA', 'net', 'network_admin'], ['FA', 'doctor', 'physician']] as const, s.u, s.tokens);
  }, 240_000);
  afterAll(async () => s.h?.close());
  const post = (body: object) =>
    fetch(`${s.h.url}/api/admin/links/match`, { method: 'POST', headers: { authorization: `Bearer ${s.tokens['FA/net']}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const status = async (id: string) => {
    const r = await get(s.h, `/api/admin/links/match/${id}`, s.tokens['FA/net']);
    expect(r.status).toBe(200);
    return (await r.json()) as RunOut;
  };
  /** Polls until `until` holds (or the run finished); the last status read. */
  const poll = async (id: string, until: (r: RunOut) => boolean = () => false, ms = 120_000) => {
    for (const end = Date.now() + ms; ; ) {
      const r = await status(id);
      if (until(r) || r.status === 'done' || r.status === 'failed' || Date.now() > end) return r;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  return { s, post, status, poll };
}

describe('matcher runs as background jobs (PostgreSQL)', () => {
  const { s, post, status, poll } = harness('postgres');
  const N = 24_000;

  beforeAll(async () => loadPatients(s.h, N), 120_000);

  it('answers 202, searches in a worker thread while the viewer keeps answering, refuses a second run (409, audited) and finishes with its summary', async () => {
    // The event loop's longest stall over the whole run: a search on it would stall it for seconds.
    const lag = monitorEventLoopDelay({ resolution: 10 });
    lag.enable();
    const asked = await post({ reason: 'a big night' });
    expect(asked.status).toBe(202);
    const run = (await asked.json()) as RunOut;
    expect(run.status).toBe('queued');

    const searching = await poll(run.id, (r) => r.progress.phase === 'searching' && r.progress.blocks !== null);
    expect([searching.status, searching.progress.phase]).toEqual(['running', 'searching']);
    expect(searching.progress.localPatients).toBe(N);
    const seenSearching = Date.now();

    // While the worker searches: the viewer answers, and a second run is refused naming this one.
    const t = Date.now();
    expect((await get(s.h, '/health')).status).toBe(200);
    expect(Date.now() - t).toBeLessThan(1000);
    const second = await post({});
    expect(second.status).toBe(409);
    const problem = (await second.json()) as { detail?: string; runId?: string };
    expect(problem.runId).toBe(run.id);
    const [refusal] = await lastAudit(s.h);
    expect(refusal).toMatchObject({ action: 'admin.link.match', outcome: 'failure' });
    expect(JSON.parse(refusal!.detail).error).toContain(run.id);
    const still = await status(run.id);
    expect([still.status, still.progress.phase]).toEqual(['running', 'searching']);

    const done = await poll(run.id, (r) => r.progress.phase !== 'searching');
    const searchMs = Date.now() - seenSearching;
    const final = done.status === 'running' ? await poll(run.id) : done;
    lag.disable();
    expect([final.status, final.error]).toEqual(['done', null]);
    expect(final.summary).toMatchObject({ localPatients: N, candidates: final.progress.candidates });
    expect(final.progress.blocksSearched).toBe(final.progress.blocks);
    // The search lasted seconds; the loop serving the viewer never stalled for one.
    expect(searchMs).toBeGreaterThan(1500);
    expect(lag.max / 1e6).toBeLessThan(1000);
    // What it proposed is in the review queue.
    const open = await s.h.exchange.db.selectFrom('identity_match').select((eb) => eb.fn.countAll<string>().as('n')).where('status', '=', 'open').executeTakeFirstOrThrow();
    expect(Number(open.n)).toBe(final.summary!.queued);
  }, 240_000);

  it('answers 404 for an unknown run and 400 for a malformed id', async () => {
    expect((await get(s.h, '/api/admin/links/match/MR-0000000000000000', s.tokens['FA/net'])).status).toBe(404);
    expect(await lastAudit(s.h).then(([e]) => e)).toMatchObject({ action: 'admin.link.match.read', outcome: 'failure' });
    for (const bad of ['nope', 'mr-0000000000000000', 'MR-00000000000000000', `MR-${'0'.repeat(15)}G`]) {
      expect([bad, (await get(s.h, `/api/admin/links/match/${bad}`, s.tokens['FA/net'])).status]).toEqual([bad, 400]);
    }
    expect((await get(s.h, '/api/admin/links/match?limit=0', s.tokens['FA/net'])).status).toBe(400);
    expect((await get(s.h, '/api/admin/links/match?all=1', s.tokens['FA/net'])).status).toBe(400);
  });

  it('does not let a run left by a dead process block the network: silent for ten minutes, it is abandoned (audited), or taken over by its job', async () => {
    await s.h.exchange.db.deleteFrom('identity_local_patient').execute();
    await loadPatients(s.h, 600);
    const ghost = async (id: string, status: 'queued' | 'running') => {
      const at = new Date(s.h.clock.ms - 60_000);
      await s.h.exchange.db
        .insertInto('identity_match_run')
        .values({ id, status, reason: null, user_id: null, username: 'net', user_facility_id: 'FA', role: 'network_admin', phase: status === 'running' ? 'searching' : null, candidates: null, blocks_searched: null, blocks: null, auto_linked: null, queued: null, skipped: null, error: null, created_at: at, started_at: at, updated_at: at, finished_at: null })
        .execute();
    };
    // A process died while running it: the run is refused meanwhile ...
    await ghost('MR-00000000000000A1', 'running');
    expect((await post({})).status).toBe(409);
    // ... and its own job (a retry, a re-queue at start) does not take it over while it may be alive.
    await s.h.exchange.jobs.enqueueMatchRun('MR-00000000000000A1');
    await s.h.exchange.jobs.runner.idle();
    expect((await status('MR-00000000000000A1')).status).toBe('running');

    // Ten minutes of silence: the next request fails it as abandoned and is queued.
    s.h.clock.advance(10 * 60_000);
    const asked = await post({ reason: 'after the crash' });
    expect(asked.status).toBe(202);
    const old = await status('MR-00000000000000A1');
    expect(old.status).toBe('failed');
    expect(old.error).toMatch(/^abandoned: no sign of life/);
    const abandoned = await s.h.exchange.db.selectFrom('audit_event').selectAll().where('action', '=', 'identity.match.finish').where('outcome', '=', 'failure').orderBy('seq', 'desc').executeTakeFirstOrThrow();
    expect(JSON.parse(abandoned.detail)).toMatchObject({ runId: 'MR-00000000000000A1', abandoned: true });
    const next = await poll(((await asked.json()) as RunOut).id);
    expect([next.status, next.summary?.localPatients]).toEqual(['done', 600]);

    // A stale run found by its job is taken over and run from the start.
    await ghost('MR-00000000000000A2', 'running');
    s.h.clock.advance(10 * 60_000);
    await s.h.exchange.jobs.enqueueMatchRun('MR-00000000000000A2');
    const taken = await poll('MR-00000000000000A2');
    expect([taken.status, taken.summary?.localPatients]).toEqual(['done', 600]);
    const attempts = await s.h.exchange.db.selectFrom('identity_match_run').select('attempts').where('id', '=', 'MR-00000000000000A2').executeTakeFirstOrThrow();
    expect(attempts.attempts).toBe(1);
  }, 120_000);
});

describe('a matcher worker that dies fails its run, and blocks nothing (embedded PGlite)', () => {
  // A heap far too small for the region: the worker thread runs out of memory.
  const { s, post, poll } = harness('embedded', () => ({ matchHeapMb: 16 }));

  beforeAll(async () => loadPatients(s.h, 20_000), 120_000);

  it('shows failed with a clear message, audited; the next request is accepted', async () => {
    const asked = await post({ reason: 'too big for its heap' });
    expect(asked.status).toBe(202);
    const run = await poll(((await asked.json()) as RunOut).id);
    expect(run.status).toBe('failed');
    expect(run.error).toMatch(/^the candidate search worker (failed|stopped)/);
    expect(run.error).not.toMatch(/\n\s+at /);
    const finish = await s.h.exchange.db.selectFrom('audit_event').selectAll().where('action', '=', 'identity.match.finish').orderBy('seq', 'desc').executeTakeFirstOrThrow();
    expect(finish).toMatchObject({ outcome: 'failure', reason: run.error });
    // The viewer process is still here, and the failed run does not block the next one.
    expect((await get(s.h, '/health')).status).toBe(200);
    const again = await post({});
    expect(again.status).toBe(202);
    expect((await poll(((await again.json()) as RunOut).id)).status).toBe('failed');
  }, 180_000);
});

describe('matcher runs through BullMQ (a `hakobune worker` takes them)', () => {
  const prefix = `hk-test-${randomBytes(4).toString('hex')}`;
  const queues = testQueues(prefix);
  let h: ViewerHarness;
  let token: string;

  beforeAll(async () => {
    h = await startViewer('postgres', () => ({ redisUrl: TEST_REDIS_URL }), { jobs: { queuePrefix: prefix } });
    token = await tokenFor(h, await enrol(h, 'FA', 'net', 'network_admin'));
    await loadPatients(h, 1000);
  }, 120_000);
  afterAll(async () => {
    await queues.close();
    await h?.close();
  });

  it('queues the run as a BullMQ job carrying only its id; a worker runs it to done', async () => {
    const asked = await fetch(`${h.url}/api/admin/links/match`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' });
    expect(asked.status).toBe(202);
    const { id } = (await asked.json()) as RunOut;
    // Nothing works the queue in this process yet (with Redis, `hakobune worker` processes do).
    expect((await queues.queue('identity-match').getJob(`match-${id}`))?.data).toEqual({ runId: id });
    await h.exchange.jobs.runner.startWorkers();
    let run: RunOut | undefined;
    for (let i = 0; i < 1200 && run?.status !== 'done' && run?.status !== 'failed'; i++) {
      if (run) await new Promise((res) => setTimeout(res, 50));
      run = (await (await get(h, `/api/admin/links/match/${id}`, token)).json()) as RunOut;
    }
    expect([run?.status, run?.summary?.localPatients]).toEqual(['done', 1000]);
  }, 120_000);
});
