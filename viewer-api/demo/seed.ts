import fs from 'node:fs';
import path from 'node:path';
import type { Exchange } from '../exchange.js';
import { generateFixtures } from '../../fixtures/generate.js';
import { uploadTree } from '../../ingest/uploader/upload.js';
import { httpTransport } from '../../ingest/uploader/transport.js';
import type { Role } from '../roles/roles.js';
import { FACILITY_KINDS, type FacilityKind } from '../../store/facility-kind.js';
import { seedDemoIdentityAndConsent, type DemoLocalPatient } from '../../consent/demo.js';
import { identityRecordOf } from '../../consent/identity-feed.js';
import { pageCurrentDemographics } from '../../store/records/demographics.repository.js';
import { startStandIn, type StandIn } from '../ai/standin.js';

/**
 * The demo that `npm start` prepares on first start, through the same paths a real region uses:
 * a generated SS-MIX2 tree per facility is uploaded over the upload protocol, indexed by the job
 * runner, its people linked and given consents, and users of every role are enrolled with TOTP
 * and a registered device. What a person needs to log in is kept in `<data>/demo/demo.json`
 * (readable by its owner only): these are demo credentials, never to be used for real data.
 */

export const DEMO_PASSWORD = 'hakobune-demo-password';

export interface DemoUser {
  facilityId: string;
  username: string;
  role: Role;
  displayName: string;
  totpSecret: string;
}

export interface DemoState {
  version: 1;
  createdAt: string;
  password: string;
  facilities: { facilityId: string; kind: FacilityKind; name: string; files: number; snapshotId: string }[];
  users: DemoUser[];
  devices: { facilityId: string; deviceId: string; credential: string }[];
  /** Regional patients the demo linked, with the consent shape each was given. */
  patients: { regionalId: string; shape: string; links: { facilityId: string; localId: string }[] }[];
}

export const demoDir = (dataDir: string) => path.join(dataDir, 'demo');
export const demoStateFile = (dataDir: string) => path.join(demoDir(dataDir), 'demo.json');

export function readDemoState(dataDir: string): DemoState | undefined {
  try {
    return JSON.parse(fs.readFileSync(demoStateFile(dataDir), 'utf8')) as DemoState;
  } catch {
    return undefined;
  }
}

/** A facility kind read back from the generator's facilities.json. */
function kindOf(generated: string): FacilityKind {
  if ((FACILITY_KINDS as readonly string[]).includes(generated)) return generated as FacilityKind;
  throw new Error(`the generator produced an unknown facility kind "${generated}"`);
}

/** Users of every role: clinicians where they work, network roles at the first hospital. */
function demoUsers(facilities: { facilityId: string; kind: FacilityKind }[]): Omit<DemoUser, 'totpSecret'>[] {
  const users: Omit<DemoUser, 'totpSecret'>[] = [];
  const add = (facilityId: string, role: Role, username: string, displayName: string) =>
    users.push({ facilityId, role, username, displayName });
  for (const f of facilities) {
    add(f.facilityId, 'facility_admin', 'admin', `${f.facilityId} 施設管理者`);
    if (f.kind === 'hospital' || f.kind === 'clinic') {
      add(f.facilityId, 'physician', 'physician', `${f.facilityId} 医師`);
      add(f.facilityId, 'nurse', 'nurse', `${f.facilityId} 看護師`);
      add(f.facilityId, 'clerk', 'clerk', `${f.facilityId} 医療事務`);
    }
    if (f.kind === 'pharmacy') add(f.facilityId, 'pharmacist', 'pharmacist', `${f.facilityId} 薬剤師`);
    if (f.kind === 'care_home') add(f.facilityId, 'care_worker', 'careworker', `${f.facilityId} 介護職員`);
  }
  const first = facilities.find((f) => f.kind === 'hospital') ?? facilities[0]!;
  add(first.facilityId, 'network_admin', 'netadmin', 'ネットワーク管理者');
  add(first.facilityId, 'dr_operator', 'drop', '災害復旧オペレーター');
  add(first.facilityId, 'auditor', 'auditor', '監査担当者');
  return users;
}

export interface SeedOptions {
  facilities?: number;
  patients?: number;
  days?: number;
  seed?: number;
  say?: (line: string) => void;
}

/**
 * Prepares the demo data once; on later starts returns what was prepared. The exchange must be
 * listening at `url` (the uploads go over HTTP, as a facility's would).
 */
export async function ensureDemoData(exchange: Exchange, url: string, opts: SeedOptions = {}): Promise<DemoState> {
  const { dataDir } = exchange.config;
  const existing = readDemoState(dataDir);
  if (existing) return existing;
  const say = opts.say ?? (() => {});
  const dir = demoDir(dataDir);
  const tree = path.join(dir, 'tree');
  // A half-made demo from an interrupted first start is made again from the start.
  fs.rmSync(tree, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });

  say('generating demo SS-MIX2 storage for 4 facilities ...');
  const generated = await generateFixtures({
    out: tree,
    facilities: opts.facilities ?? 4,
    patients: opts.patients ?? 300,
    days: opts.days ?? 30,
    seed: opts.seed ?? 7,
    extended: true,
  });
  const listed = JSON.parse(fs.readFileSync(path.join(tree, 'facilities.json'), 'utf8')) as { facilityId: string; kind: string; name: string }[];
  const facilities = listed.map((f) => ({ facilityId: f.facilityId, kind: kindOf(f.kind), name: f.name }));

  const state: DemoState = { version: 1, createdAt: new Date().toISOString(), password: DEMO_PASSWORD, facilities: [], users: [], devices: [], patients: [] };
  for (const f of facilities) {
    const known = (await exchange.backup.listFacilities()).find((x) => x.id === f.facilityId);
    const token = known
      ? (await exchange.backup.rotateToken(f.facilityId)).token
      : (await exchange.backup.addFacility({ id: f.facilityId, name: f.name, kind: f.kind })).token;
    const files = generated.facilities.find((g) => g.facilityId === f.facilityId)?.files ?? 0;
    say(`uploading ${f.facilityId} (${f.kind}, ${files} files) over ${url}/ingest/v1 ...`);
    const extended = path.join(tree, 'extended', f.facilityId);
    const summary = await uploadTree(
      {
        server: url,
        facilityId: f.facilityId,
        root: path.join(tree, f.facilityId),
        ...(fs.existsSync(extended) ? { extended } : {}),
        cacheFile: path.join(dir, 'cache', `${f.facilityId}.cache`),
      },
      { transport: httpTransport({ server: url, token }) },
    );
    state.facilities.push({ ...f, files, snapshotId: summary.snapshotId });
  }

  say('indexing the uploaded messages ...');
  await exchange.jobs.runner.idle();

  say('linking patients across facilities and recording their consents ...');
  const seeded = await seedIdentityAndConsent(exchange, tree, facilities);
  state.patients = seeded.patients.map((p) => ({ regionalId: p.regionalId, shape: p.shape, links: p.links }));

  say('enrolling demo users (password + TOTP) and registering a demo device per facility ...');
  const ctx = { actor: { username: 'demo-setup' }, address: null, endpoint: 'demo setup' };
  for (const u of demoUsers(facilities)) {
    const made = await exchange.viewer.admin.addUser(ctx, { ...u, password: DEMO_PASSWORD });
    state.users.push({ ...u, totpSecret: made.totpSecret });
  }
  for (const f of facilities) {
    const d = await exchange.viewer.admin.registerDevice(ctx, f.facilityId, `${f.facilityId} demo workstation`);
    state.devices.push({ facilityId: f.facilityId, deviceId: d.deviceId, credential: d.credential });
  }

  fs.writeFileSync(demoStateFile(dataDir), JSON.stringify(state, null, 2), { mode: 0o600 });
  return state;
}

/**
 * Links the demo's people and records their consents. Demographics are read back from the
 * index (what the facilities' ADT-00 messages say); which local IDs are one person comes from
 * the generator's ground truth, standing in for the staff who check an insurance card.
 */
async function seedIdentityAndConsent(exchange: Exchange, tree: string, facilities: { facilityId: string; kind: FacilityKind }[]) {
  const truth = new Map<string, string>();
  for (const line of fs.readFileSync(path.join(tree, 'ground-truth.jsonl'), 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const t = JSON.parse(line) as { personId: string; facilityId: string; localId: string };
    truth.set(`${t.facilityId}/${t.localId}`, t.personId);
  }
  const locals: DemoLocalPatient[] = [];
  for (const f of facilities) {
    let after = 0;
    for (;;) {
      const page = await pageCurrentDemographics(exchange.db, f.facilityId, after, 2000);
      for (const d of page.items) {
        const personId = truth.get(`${d.facilityId}/${d.patientId}`);
        if (personId) locals.push({ ...identityRecordOf(d.facilityId, d.patientId, d.record), personId });
      }
      if (page.done) break;
      after = page.lastId;
    }
  }
  return seedDemoIdentityAndConsent(exchange.consent, { facilities, localPatients: locals, now: Date.now() });
}

/** The registry id of the demo's AI service (the demo consents name it for purpose ai-analysis). */
export const DEMO_AI_SERVICE = 'demo-ai';

/**
 * Starts the local stand-in AI service (a FHIR server on 127.0.0.1 that answers with a
 * RiskAssessment) and points the registry's demo entry at it. Its port changes with every start,
 * so the entry is updated each time; the caller closes the stand-in when the exchange stops.
 */
export async function startDemoAiService(exchange: Exchange): Promise<StandIn> {
  const standIn = await startStandIn();
  const ctx = { actor: { username: 'demo-setup' }, address: null, endpoint: 'demo setup' };
  const definition = {
    id: DEMO_AI_SERVICE,
    name: 'ローカル検証用AI (stand-in)',
    baseUrl: standIn.base,
    operation: '$analyze',
    auth: { kind: 'none' },
    categories: ['demographics', 'prescriptions', 'injections', 'labs', 'diagnoses'],
    facilities: 'all',
    location: { country: 'JP', region: 'loopback' },
    birthDate: 'age',
  };
  try {
    const known = (await exchange.ai.registry.list()).some((s) => s.id === DEMO_AI_SERVICE);
    if (known) await exchange.ai.registry.update(ctx, DEMO_AI_SERVICE, { baseUrl: standIn.base, enabled: true });
    else await exchange.ai.registry.register(ctx, definition);
  } catch (e) {
    await standIn.close();
    throw e;
  }
  return standIn;
}
