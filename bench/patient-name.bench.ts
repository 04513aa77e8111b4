/**
 * Patient search by name (consent/name-search.ts, behind FHIR `Patient?name=`): the index query
 * alone, without the gate, over `--patients` linked local patients.
 *
 *   npx tsx bench/patient-name.bench.ts --patients 100000 --queries 200
 *
 * Builds, on a fresh PostgreSQL database, local patients at 10 facilities with names drawn from
 * a small vocabulary of family and given names (kanji and kana, as the matcher stores them), each
 * linked to a regional patient, then times `--queries` searches of each shape: a family name, a
 * given-name prefix in hiragana, and "family given". Reports wall time percentiles, the CPU of
 * this process and of the PostgreSQL backends (from /proc), and the load average.
 */
import os from 'node:os';
import fs from 'node:fs';
import { sql } from 'kysely';
import { createExchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { findPatientsByName } from '../consent/name-search.js';
import { normaliseKanaName, normaliseKanjiName } from '../consent/normalise.js';
import { createTestDatabase } from '../test/support/postgres.js';
import { tempDir } from '../test/support/tmp.js';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}
const PATIENTS = arg('patients', 100_000);
const QUERIES = arg('queries', 200);

const FAMILY: [string, string][] = [
  ['佐藤', 'サトウ'], ['鈴木', 'スズキ'], ['高橋', 'タカハシ'], ['田中', 'タナカ'], ['伊藤', 'イトウ'], ['渡辺', 'ワタナベ'],
  ['山本', 'ヤマモト'], ['中村', 'ナカムラ'], ['小林', 'コバヤシ'], ['加藤', 'カトウ'], ['吉田', 'ヨシダ'], ['山田', 'ヤマダ'],
  ['佐々木', 'ササキ'], ['山口', 'ヤマグチ'], ['松本', 'マツモト'], ['井上', 'イノウエ'], ['木村', 'キムラ'], ['林', 'ハヤシ'],
  ['清水', 'シミズ'], ['海辺', 'ウミベ'],
];
const GIVEN: [string, string][] = [
  ['太郎', 'タロウ'], ['花子', 'ハナコ'], ['一郎', 'イチロウ'], ['桜', 'サクラ'], ['健', 'ケン'], ['美咲', 'ミサキ'], ['大輔', 'ダイスケ'],
  ['陽子', 'ヨウコ'], ['翔', 'ショウ'], ['恵', 'メグミ'], ['誠', 'マコト'], ['由美', 'ユミ'], ['隆', 'タカシ'], ['直子', 'ナオコ'],
  ['浩', 'ヒロシ'], ['明美', 'アケミ'], ['修', 'オサム'], ['久美子', 'クミコ'], ['勇', 'イサム'], ['和子', 'カズコ'],
];

function backendCpuSeconds(pids: number[]): number {
  const tick = 100; // USER_HZ on Linux
  let total = 0;
  for (const pid of pids) {
    try {
      const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      total += (Number(f[11]) + Number(f[12])) / tick;
    } catch {
      /* the backend ended */
    }
  }
  return total;
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

async function main() {
  const tmp = tempDir('hakobune-name-bench-');
  const pg = await createTestDatabase('hknamebench');
  const exchange = await createExchange(testConfig(tmp.dir, { databaseUrl: pg.url }));
  try {
    const db = exchange.db;
    const t0 = performance.now();
    // Bulk rows as identity.recordLocalPatients writes them (normalised keys), and one link each.
    await sql`
      insert into regional_patient (id, created_at, created_by)
      select 'RP-' || lpad(g::text, 8, '0'), now(), 'bench' from generate_series(1, ${PATIENTS}) g`.execute(db);
    const rows: string[] = [];
    for (let i = 1; i <= PATIENTS; i++) {
      const [fk, fa] = FAMILY[(i * 7) % FAMILY.length]!;
      const [gk, ga] = GIVEN[(i * 13) % GIVEN.length]!;
      rows.push(JSON.stringify({ f: `F${String(i % 10).padStart(2, '0')}`, l: String(i).padStart(8, '0'), fk, gk, fa, ga, kj: `${normaliseKanjiName(fk)}\u001f${normaliseKanjiName(gk)}`, kn: `${normaliseKanaName(fa)}\u001f${normaliseKanaName(ga)}` }));
    }
    for (let i = 0; i < rows.length; i += 20_000) {
      const chunk = `[${rows.slice(i, i + 20_000).join(',')}]`;
      await sql`
        insert into identity_local_patient (facility_id, local_id, family_kanji, given_kanji, family_kana, given_kana, birth_date, sex,
                                            postal_code, address, phone, kana_key, kanji_key, updated_at)
        select x.f, x.l, x.fk, x.gk, x.fa, x.ga, '19600101', 'F', '', '', '', x.kn, x.kj, now()
        from jsonb_to_recordset(${chunk}::jsonb) as x(f text, l text, fk text, gk text, fa text, ga text, kj text, kn text)`.execute(db);
    }
    await sql`
      insert into identity_link (facility_id, local_id, regional_id, method, score, linked_by, linked_at, evidence)
      select facility_id, local_id, 'RP-' || local_id, 'manual', null, 'bench', now(), 'bench' from identity_local_patient`.execute(db);
    await sql`analyze`.execute(db);
    console.log(`built ${PATIENTS} linked local patients in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    // The plan of one search: the prefix indexes of migration 0009 should serve it.
    const plan = await sql<{ 'QUERY PLAN': string }>`explain select 1 from identity_local_patient p
      where split_part(p.kanji_key, chr(31), 1) like ${'佐藤%'} or split_part(p.kanji_key, chr(31), 2) like ${'佐藤%'}`.execute(db);
    console.log(plan.rows.map((r) => `  ${r['QUERY PLAN']}`).join('\n'));

    const backends = async () =>
      (await sql<{ pid: number }>`select pid from pg_stat_activity where datname = current_database()`.execute(db)).rows.map((r) => r.pid);
    const shapes: [string, (i: number) => { name?: string; family?: string; given?: string }][] = [
      ['name=<family kanji>', (i) => ({ name: FAMILY[i % FAMILY.length]![0] })],
      ['name=<given prefix, hiragana>', (i) => ({ name: GIVEN[i % GIVEN.length]![1].slice(0, 2).replace(/[\u30a1-\u30f6]/g, (c) => String.fromCharCode(c.charCodeAt(0) - 0x60)) })],
      ['name=<family given>', (i) => ({ name: `${FAMILY[i % FAMILY.length]![0]} ${GIVEN[(i * 3) % GIVEN.length]![0]}` })],
    ];
    console.log(`machine: ${os.cpus().length} x ${os.cpus()[0]?.model}; load average before: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    for (const [label, make] of shapes) {
      const pids = await backends();
      const pgBefore = backendCpuSeconds(pids);
      const cpu = process.cpuUsage();
      const times: number[] = [];
      let found = 0;
      const start = performance.now();
      for (let i = 0; i < QUERIES; i++) {
        const t = performance.now();
        found += (await findPatientsByName(db, make(i), 200)).length;
        times.push(performance.now() - t);
      }
      const wall = (performance.now() - start) / 1000;
      const used = process.cpuUsage(cpu);
      times.sort((a, b) => a - b);
      console.log(
        `${label}: ${QUERIES} queries in ${wall.toFixed(2)} s; p50 ${pct(times, 50).toFixed(1)} ms, p95 ${pct(times, 95).toFixed(1)} ms, p99 ${pct(times, 99).toFixed(1)} ms; ` +
          `${(found / QUERIES).toFixed(0)} ids per query (capped at 200); CPU: node ${((used.user + used.system) / 1e6).toFixed(2)} s, PostgreSQL backends ${(backendCpuSeconds(pids) - pgBefore).toFixed(2)} s`,
      );
    }
    console.log(`load average after: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  } finally {
    await exchange.stop();
    await pg.drop();
    tmp.remove();
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
