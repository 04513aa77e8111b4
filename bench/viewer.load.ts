/**
 * The load generator of bench/viewer.bench.ts, run as a child process so that the clients' CPU
 * is not counted against the server. Plain HTTP/1.1 keep-alive over `net` sockets (one socket per
 * client, one request in flight per socket): far cheaper per request than fetch, so that most of
 * the machine is left to the server and PostgreSQL.
 *
 * Input: one JSON object in argv[2] ({ port, token, template, patients, clients, warmupSeconds,
 * seconds }); `template` holds `{p}` where a random patient number goes. Output on stdout: the
 * line `warm` when the warm-up ends, then one JSON line with the figures of the measured window.
 */
import net from 'node:net';

export interface LoadSpec {
  port: number;
  token: string;
  template: string;
  patients: number;
  clients: number;
  warmupSeconds: number;
  seconds: number;
}

const spec = JSON.parse(process.argv[2] ?? '') as LoadSpec;

interface Totals {
  latencies: number[];
  statuses: Map<number, number>;
  bytes: number;
}

const totals: Totals = { latencies: [], statuses: new Map(), bytes: 0 };
let measuring = false;
let stopping = false;

/** One client: a keep-alive socket that sends a request, reads one response, and repeats. */
function client(): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(spec.port, '127.0.0.1');
    socket.setNoDelay(true);
    let buf: Buffer = Buffer.alloc(0);
    let sentAt = 0;
    let wasMeasuring = false;
    const send = () => {
      if (stopping) {
        socket.end();
        resolve();
        return;
      }
      const p = 1 + Math.floor(Math.random() * spec.patients);
      const path = spec.template.replace('{p}', String(p));
      wasMeasuring = measuring;
      sentAt = performance.now();
      socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${spec.token}\r\nConnection: keep-alive\r\n\r\n`);
    };
    socket.on('connect', send);
    socket.on('error', reject);
    socket.on('data', (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      for (;;) {
        const headEnd = buf.indexOf('\r\n\r\n');
        if (headEnd < 0) return;
        const head = buf.subarray(0, headEnd).toString('latin1');
        const status = Number(head.slice(9, 12));
        const m = /\r\ncontent-length: *(\d+)/i.exec(head);
        if (!m) {
          reject(new Error(`a response without Content-Length (status ${status}); this generator reads only those`));
          socket.destroy();
          return;
        }
        const total = headEnd + 4 + Number(m[1]);
        if (buf.length < total) return;
        buf = buf.subarray(total);
        if (wasMeasuring && measuring) {
          totals.latencies.push(performance.now() - sentAt);
          totals.statuses.set(status, (totals.statuses.get(status) ?? 0) + 1);
          totals.bytes += total;
        }
        send();
      }
    });
  });
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

const all = Promise.all(Array.from({ length: spec.clients }, () => client()));
await new Promise((r) => setTimeout(r, spec.warmupSeconds * 1000));
process.stdout.write('warm\n');
measuring = true;
const cpu0 = process.cpuUsage();
const t0 = performance.now();
await new Promise((r) => setTimeout(r, spec.seconds * 1000));
measuring = false;
const wall = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
stopping = true;
await all;
const lat = totals.latencies.sort((a, b) => a - b);
process.stdout.write(
  JSON.stringify({
    requests: lat.length,
    seconds: wall,
    statuses: Object.fromEntries(totals.statuses),
    bytes: totals.bytes,
    p50: pct(lat, 50),
    p95: pct(lat, 95),
    p99: pct(lat, 99),
    max: lat[lat.length - 1] ?? NaN,
    clientCpuSeconds: (cpu.user + cpu.system) / 1e6,
  }) + '\n',
);
