import { execFileSync } from 'node:child_process';
import https from 'node:https';
import tls from 'node:tls';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createExchange, type Exchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { tempDir } from './support/tmp.js';

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(!hasOpenssl())('HTTPS when a certificate is configured', () => {
  const tmp = tempDir();
  const cert = path.join(tmp.dir, 'cert.pem');
  const key = path.join(tmp.dir, 'key.pem');
  let exchange: Exchange;
  let url: string;
  beforeAll(async () => {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert,
    ], { stdio: 'ignore' });
    exchange = await createExchange(testConfig(path.join(tmp.dir, 'data'), { tls: { certFile: cert, keyFile: key } }));
    url = await exchange.listen();
  }, 240_000);
  afterAll(async () => {
    await exchange?.stop();
    tmp.remove();
  });

  function get(p: string, opts: https.RequestOptions = {}): Promise<{ status: number; headers: Record<string, unknown>; protocol: string }> {
    return new Promise((resolve, reject) => {
      const req = https.get(`${url}${p}`, { ca: fs.readFileSync(cert), ...opts }, (res) => {
        const protocol = (res.socket as tls.TLSSocket).getProtocol() ?? '';
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, protocol }));
      });
      req.on('error', reject);
    });
  }

  it('answers over TLS 1.2 or later, with HSTS on the viewer API', async () => {
    expect(url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const health = await get('/health');
    expect(health.status).toBe(200);
    expect(['TLSv1.2', 'TLSv1.3']).toContain(health.protocol);
    const me = await get('/api/auth/me');
    expect(me.status).toBe(401);
    expect(me.headers['strict-transport-security']).toBe('max-age=31536000');
    const v12 = await get('/health', { maxVersion: 'TLSv1.2' });
    expect(v12.protocol).toBe('TLSv1.2');
  });

  it('refuses TLS 1.1 and older', async () => {
    const port = Number(new URL(url).port);
    const outcome = await new Promise<string>((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port, ca: fs.readFileSync(cert), minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' });
      s.on('secureConnect', () => {
        resolve(`connected with ${s.getProtocol()}`);
        s.destroy();
      });
      s.on('error', (e) => resolve(`refused: ${e.message}`));
    });
    expect(outcome).toMatch(/^refused/);
  });

  it('refuses plain HTTP on the TLS port', async () => {
    const plain = url.replace('https:', 'http:');
    await expect(fetch(`${plain}/health`)).rejects.toThrow();
  });
});
