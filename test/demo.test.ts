import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createExchange, type Exchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { ensureDemoData, readDemoState, startDemoAiService, DEMO_AI_SERVICE, type DemoState } from '../viewer-api/demo/seed.js';
import { totpCode } from '../viewer-api/auth/totp.js';
import { DEVICE_HEADER } from '../viewer-api/routes/session.js';
import { howToLogIn } from '../viewer-api/cli/demo.command.js';
import { tempDir } from './support/tmp.js';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const HAKOBUNE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'hakobune.js');

/**
 * The demo that `npm start` prepares, followed the way the README tells a new user to: log in
 * with password, TOTP and the registered device, then read a linked patient's timeline.
 */
describe('the demo', () => {
  const tmp = tempDir();
  let exchange: Exchange;
  let url: string;
  let state: DemoState;
  let token: string;

  beforeAll(async () => {
    exchange = await createExchange(testConfig(tmp.dir));
    url = await exchange.listen();
    state = await ensureDemoData(exchange, url, { facilities: 3, patients: 60, days: 5, seed: 11 });
    // One login for the whole file: a TOTP code is accepted once per time step (replay protection).
    const physician = state.users.find((u) => u.role === 'physician')!;
    token = await login(physician.facilityId, physician.username);
  }, 240_000);
  afterAll(async () => {
    await exchange?.stop();
    tmp.remove();
  });

  async function login(facilityId: string, username: string) {
    const device = state.devices.find((d) => d.facilityId === facilityId)!;
    const user = state.users.find((u) => u.facilityId === facilityId && u.username === username)!;
    const res = await fetch(`${url}/api/auth/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', [DEVICE_HEADER]: device.credential },
      body: JSON.stringify({ facilityId, username, password: state.password, totp: await totpCode(user.totpSecret, Date.now()) }),
    });
    expect(res.status).toBe(200);
    return ((await res.json()) as { token: string }).token;
  }

  it('uploads every facility, links people across facilities and gives them consents of several shapes', () => {
    expect(state.facilities.length).toBe(3);
    for (const f of state.facilities) expect(f.snapshotId).toMatch(/^S/);
    expect(state.patients.length).toBeGreaterThan(3);
    expect(state.patients.every((p) => p.links.length >= 2)).toBe(true);
    const shapes = new Set(state.patients.map((p) => p.shape));
    expect(shapes).toContain('withdrawn');
    expect(shapes).toContain('all-except-one-facility');
    expect(new Set(state.users.map((u) => u.role)).size).toBeGreaterThanOrEqual(8);
  });

  it("lets the hospital physician read another facility's records of a consenting patient", async () => {
    const physician = state.users.find((u) => u.role === 'physician')!;
    const shared = state.patients.find(
      (p) => p.shape === 'hospitals-and-pharmacies' && p.links.some((l) => l.facilityId !== physician.facilityId),
    );
    expect(shared).toBeDefined();
    const res = await fetch(`${url}/api/patients/${shared!.regionalId}/timeline?limit=200`, { headers: { Authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { records: { sourceFacilityId: string }[] };
    const others = body.records.filter((r) => r.sourceFacilityId !== physician.facilityId);
    expect(others.length).toBeGreaterThan(0);
  });

  it('denies the same physician a withdrawn patient', async () => {
    const physician = state.users.find((u) => u.role === 'physician')!;
    const withdrawn = state.patients.find((p) => p.shape === 'withdrawn' && p.links.some((l) => l.facilityId !== physician.facilityId))!;
    const res = await fetch(`${url}/api/patients/${withdrawn.regionalId}/timeline`, { headers: { Authorization: `Bearer ${token}` } });
    if (res.status === 200) {
      // The physician's own facility's records may be shown; nothing from another facility is.
      const body = (await res.json()) as { records: { sourceFacilityId: string }[] };
      expect(body.records.filter((r) => r.sourceFacilityId !== physician.facilityId)).toEqual([]);
    } else {
      expect(res.status).toBe(403);
    }
  });

  it('sends the AI-consenting patient to the local stand-in service through the exchange, de-identified', async () => {
    const standIn = await startDemoAiService(exchange);
    try {
      const patient = state.patients.find((p) => p.shape === 'ai-and-research')!;
      const submitted = await fetch(`${url}/api/ai/requests`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ serviceId: DEMO_AI_SERVICE, patientId: patient.regionalId }),
      });
      expect(submitted.status).toBe(202);
      const { id } = (await submitted.json()) as { id: string };
      let status = '';
      for (let i = 0; i < 120 && !['done', 'failed', 'denied'].includes(status); i++) {
        await new Promise((r) => setTimeout(r, 250));
        const res = await fetch(`${url}/api/ai/requests/${id}`, { headers: { Authorization: `Bearer ${token}` } });
        status = ((await res.json()) as { status: string }).status;
      }
      expect(status).toBe('done');
      const result = await fetch(`${url}/api/ai/requests/${id}/result`, { headers: { Authorization: `Bearer ${token}` } });
      expect(result.status).toBe(200);
      expect(JSON.stringify(await result.json())).toContain('RiskAssessment');
      // What left the exchange carries none of the patient's local IDs.
      const sent = standIn.received.map((r) => r.body).join('\n');
      expect(sent.length).toBeGreaterThan(0);
      for (const link of patient.links) expect(sent).not.toContain(link.localId);
    } finally {
      await standIn.close();
    }
  });

  it('refuses the AI service for a patient who did not consent to it', async () => {
    const patient = state.patients.find((p) => p.shape === 'hospitals-and-pharmacies')!;
    const res = await fetch(`${url}/api/ai/requests`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ serviceId: DEMO_AI_SERVICE, patientId: patient.regionalId }),
    });
    expect(res.status).toBe(403);
  });

  it('prints login and read commands that work when pasted into a shell', async () => {
    const lines = howToLogIn(url, state, tmp.dir).split('\n');
    const from = lines.findIndex((l) => l.startsWith('  CODE='));
    const to = lines.findIndex((l) => l.startsWith('Then'));
    expect(from).toBeGreaterThan(0);
    expect(to).toBeGreaterThan(from);
    // The printed block as it stands, with `npx hakobune` run from this checkout; then the two
    // printed reads that need no id from an earlier answer, each followed by its HTTP status.
    const login = lines.slice(from, to).join('\n').replace('npx hakobune', `"${process.execPath}" "${HAKOBUNE}"`);
    const reads = lines.filter((l) => /^ {2}curl -s \S+\/(timeline|\\\$everything) /.test(l));
    expect(reads).toHaveLength(2);
    const script = [login, 'test -n "$TOKEN" || exit 9', ...reads.map((l) => `${l.trim()} -o /dev/null -w '%{http_code}\\n'`)].join('\n');
    // A TOTP code is accepted once: the physician already logged in during this step.
    await new Promise((r) => setTimeout(r, 30_000 - (Date.now() % 30_000) + 500));
    const out = await new Promise<string>((resolve, reject) =>
      execFile('bash', ['-c', script], { env: { ...process.env, HAKOBUNE_DATA_DIR: tmp.dir }, timeout: 120_000 }, (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
      ),
    );
    expect(out.trim().split('\n')).toEqual(['200', '200']);
  }, 180_000);

  it('is prepared once: a second call returns the saved state without uploading again', async () => {
    const again = await ensureDemoData(exchange, url);
    expect(again).toEqual(state);
    expect(readDemoState(tmp.dir)).toEqual(state);
  });
});
