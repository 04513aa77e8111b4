import { describe, expect, it } from 'vitest';
import { hashPassword, parsePasswordHash, verifyPassword, passwordProblem } from './passwords.js';
import { checkTotp, newTotpSecret, totpCode, TOTP_PERIOD_SECONDS } from './totp.js';
import { SecretBox } from './secret-box.js';
import { tempDir } from '../../test/support/tmp.js';
import path from 'node:path';
import fs from 'node:fs';
import { execFile } from 'node:child_process';
import { pathToFileURL } from 'node:url';

describe('passwords', () => {
  it('verifies the right password and refuses others', async () => {
    const h = await hashPassword('correct horse battery');
    expect(h).toMatch(/^scrypt\$32768\$8\$1\$/);
    expect(await verifyPassword('correct horse battery', h)).toBe(true);
    expect(await verifyPassword('correct horse batterY', h)).toBe(false);
    expect(await verifyPassword('', h)).toBe(false);
  });

  it('salts every hash', async () => {
    expect(await hashPassword('same password here')).not.toBe(await hashPassword('same password here'));
  });

  it('never matches a malformed or weakened stored hash', async () => {
    const h = await hashPassword('correct horse battery');
    expect(await verifyPassword('x', 'plain')).toBe(false);
    const weakened = h.replace('$32768$', '$1024$');
    expect(parsePasswordHash(weakened)).toBeUndefined();
    expect(await verifyPassword('correct horse battery', weakened)).toBe(false);
    expect(parsePasswordHash(h.replace('$32768$', '$30000$'))).toBeUndefined();
  });

  it('asks for length, not composition', () => {
    expect(passwordProblem('short')).toMatch(/12/);
    expect(passwordProblem('a long enough passphrase')).toBeUndefined();
  });
});

describe('TOTP', () => {
  const secret = newTotpSecret();
  const t = 1_800_000_000_000;
  const step = Math.floor(t / 1000 / TOTP_PERIOD_SECONDS);

  it('accepts the current code and one step of drift either side', async () => {
    expect(await checkTotp(secret, await totpCode(secret, t), t, null)).toEqual({ ok: true, step });
    const early = await checkTotp(secret, await totpCode(secret, t - 30_000), t, null);
    expect(early).toEqual({ ok: true, step: step - 1 });
    const late = await checkTotp(secret, await totpCode(secret, t + 30_000), t, null);
    expect(late).toEqual({ ok: true, step: step + 1 });
  });

  it('refuses codes two steps away, malformed codes and wrong codes', async () => {
    expect((await checkTotp(secret, await totpCode(secret, t - 61_000), t, null)).ok).toBe(false);
    expect(await checkTotp(secret, '12345', t, null)).toEqual({ ok: false, reason: 'malformed' });
    expect(await checkTotp(secret, "1' OR 1", t, null)).toEqual({ ok: false, reason: 'malformed' });
    const right = await totpCode(secret, t);
    const wrong = String((Number(right) + 1) % 1_000_000).padStart(6, '0');
    expect(await checkTotp(secret, wrong, t, null)).toEqual({ ok: false, reason: 'wrong' });
  });

  it('refuses a code of a step already used (replay), and earlier steps', async () => {
    const code = await totpCode(secret, t);
    expect(await checkTotp(secret, code, t, step)).toEqual({ ok: false, reason: 'replayed' });
    const previous = await totpCode(secret, t - 30_000);
    expect(await checkTotp(secret, previous, t, step)).toEqual({ ok: false, reason: 'replayed' });
    const next = await totpCode(secret, t + 30_000);
    expect(await checkTotp(secret, next, t + 30_000, step)).toEqual({ ok: true, step: step + 1 });
  });
});

describe('secret box', () => {
  it('round-trips, binds to its owner, and creates its key file once', () => {
    const tmp = tempDir();
    try {
      const file = path.join(tmp.dir, 'k', 'secret.key');
      const box = SecretBox.fromKeyFile(file);
      expect(fs.statSync(file).mode & 0o777).toBe(0o600);
      const sealed = box.seal(Buffer.from('seed'), 'F001/alice');
      expect(SecretBox.fromKeyFile(file).open(sealed, 'F001/alice').toString()).toBe('seed');
      expect(() => box.open(sealed, 'F001/mallory')).toThrow();
      const flipped = Buffer.from(sealed);
      flipped[flipped.length - 1]! ^= 1;
      expect(() => box.open(flipped, 'F001/alice')).toThrow();
      const other = SecretBox.fromKeyFile(path.join(tmp.dir, 'other.key'));
      expect(() => other.open(sealed, 'F001/alice')).toThrow();
      expect(fs.readdirSync(path.join(tmp.dir, 'k'))).toEqual(['secret.key']);
    } finally {
      tmp.remove();
    }
  });

  it('gives processes that start together one key (serve --workers)', async () => {
    const tmp = tempDir();
    try {
      const dir = path.join(tmp.dir, 'keys');
      const file = path.join(dir, 'secret.key');
      const signals = path.join(tmp.dir, 'signals');
      fs.mkdirSync(signals);
      const module = pathToFileURL(path.resolve(import.meta.dirname, 'secret-box.ts')).href;
      // Each process loads the code, says it is ready, and waits for the word to read the key
      // file at the same moment as the others.
      const script = [
        `import fs from 'node:fs';`,
        `const { SecretBox } = await import(${JSON.stringify(module)});`,
        `fs.writeFileSync(${JSON.stringify(signals)} + '/ready.' + process.pid, '');`,
        `while (!fs.existsSync(${JSON.stringify(path.join(signals, 'go'))}));`,
        `process.stdout.write(SecretBox.fromKeyFile(${JSON.stringify(file)}).seal(Buffer.from('same'), 'a').toString('base64'));`,
      ].join('\n');
      const n = 6;
      const runs = Array.from(
        { length: n },
        () =>
          new Promise<{ code: number; out: string; err: string }>((resolve) => {
            execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], (e, out, err) => resolve({ code: e ? 1 : 0, out, err }));
          }),
      );
      while (fs.readdirSync(signals).length < n) await new Promise((r) => setTimeout(r, 20));
      fs.writeFileSync(path.join(signals, 'go'), '');
      const results = await Promise.all(runs);
      for (const r of results) expect([r.code, r.err]).toEqual([0, '']);
      const box = SecretBox.fromKeyFile(file);
      for (const r of results) expect(box.open(Buffer.from(r.out, 'base64'), 'a').toString()).toBe('same');
      expect(fs.readdirSync(dir)).toEqual(['secret.key']);
    } finally {
      tmp.remove();
    }
  }, 60_000);
});
