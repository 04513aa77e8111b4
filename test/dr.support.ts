import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import { S3PackStore, type S3PackStoreOptions } from '../store/dr/s3-pack-store.js';

/**
 * A real S3-compatible server (s3rver, storing in a folder) run as a child process on
 * 127.0.0.1 and a free port. s3rver accepts the access key S3RVER / S3RVER.
 */
export interface S3Server {
  endpoint: string;
  bucket: string;
  stop(): Promise<void>;
}

export async function startS3Server(directory: string, bucket = 'packs'): Promise<S3Server> {
  const script = `
    const S3rver = require('s3rver');
    new S3rver({ port: 0, address: '127.0.0.1', directory: ${JSON.stringify(directory)}, silent: true,
                 configureBuckets: [{ name: ${JSON.stringify(bucket)} }] })
      .run().then((a) => console.log(JSON.stringify(a)), (e) => { console.error(e); process.exit(1); });`;
  const child: ChildProcess = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'], cwd: process.cwd() });
  const port = await new Promise<number>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => reject(new Error('s3rver did not start within 20 s')), 20_000);
    lines.once('line', (l) => {
      clearTimeout(timer);
      try {
        resolve((JSON.parse(l) as AddressInfo).port);
      } catch (e) {
        reject(e as Error);
      }
    });
    child.once('exit', (code) => reject(new Error(`s3rver exited with ${code}`)));
  });
  return {
    endpoint: `http://127.0.0.1:${port}`,
    bucket,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

export function s3Store(server: { endpoint: string; bucket: string }, opts: Partial<S3PackStoreOptions> = {}): S3PackStore {
  return new S3PackStore({
    endpoint: server.endpoint,
    bucket: server.bucket,
    region: 'us-east-1',
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    ...opts,
  });
}

/** What the fault proxy does with one request. */
export type Fault =
  | { kind: 'status'; status: number; code?: string }
  | { kind: 'delay'; ms: number }
  /** Forward this many bytes of the request body to the server, then cut both connections. */
  | { kind: 'cut-body'; afterBytes: number }
  /** Forward the whole request, let the server finish, then cut the client without an answer. */
  | { kind: 'lose-response' };

export interface SeenRequest {
  method: string;
  url: string;
  fault: Fault['kind'] | 'none';
}

/**
 * A small real HTTP proxy on 127.0.0.1 in front of the S3 server that injects faults into the
 * requests a rule picks (errors, delays, connections cut mid-body, lost answers).
 */
export interface FaultProxy {
  endpoint: string;
  seen: SeenRequest[];
  rule: (req: { method: string; url: string; index: number }) => Fault | undefined;
  stop(): Promise<void>;
}

export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const target = new URL(upstream);
  const proxy: FaultProxy = { endpoint: '', seen: [], rule: () => undefined, stop: async () => {} };
  const forward = (req: http.IncomingMessage, res: http.ServerResponse, cutAfter?: number, loseResponse = false) => {
    const up = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (upRes) => {
        if (loseResponse) {
          upRes.resume();
          upRes.on('end', () => req.socket.destroy());
          return;
        }
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
      },
    );
    up.on('error', () => req.socket.destroy());
    if (cutAfter === undefined) {
      req.pipe(up);
      return;
    }
    let sent = 0;
    req.on('data', (chunk: Buffer) => {
      if (sent >= cutAfter) return;
      const part = chunk.subarray(0, cutAfter - sent);
      sent += part.length;
      up.write(part);
      if (sent >= cutAfter) {
        // Let the server take what it received, then cut both sides mid-body.
        setTimeout(() => {
          up.destroy();
          req.socket.destroy();
        }, 50);
      }
    });
  };
  const server = http.createServer((req, res) => {
    const index = proxy.seen.length;
    const fault = proxy.rule({ method: req.method ?? '', url: req.url ?? '', index });
    proxy.seen.push({ method: req.method ?? '', url: req.url ?? '', fault: fault?.kind ?? 'none' });
    if (!fault) return forward(req, res);
    switch (fault.kind) {
      case 'status':
        req.resume();
        req.on('end', () => {
          res.writeHead(fault.status, { 'content-type': 'application/xml' });
          res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${fault.code ?? 'InternalError'}</Code><Message>injected fault</Message></Error>`);
        });
        return;
      case 'delay': {
        const timer = setTimeout(() => forward(req, res), fault.ms);
        req.socket.once('close', () => clearTimeout(timer));
        return;
      }
      case 'cut-body':
        return forward(req, res, fault.afterBytes);
      case 'lose-response':
        return forward(req, res, undefined, true);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  proxy.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  proxy.stop = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  return proxy;
}
