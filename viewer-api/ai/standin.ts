import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/**
 * A stand-in AI service: a real FHIR server on 127.0.0.1 that records everything it receives
 * and answers like a risk model would (a RiskAssessment about the Patient of the Bundle it was
 * sent), with switchable misbehaviour. Also an OAuth 2.0 token endpoint (client credentials).
 * Used by the tests, the bench and the demo (`hakobune ai stand-in`); never part of the exchange itself.
 */

export type Behaviour =
  | { kind: 'ok' }
  /** Answers correctly after a delay. */
  | { kind: 'late'; ms: number }
  /** HTTP 500 (an OperationOutcome). */
  | { kind: 'error'; status: number; retryAfter?: string }
  /** 200 with a body that is not JSON. */
  | { kind: 'not-json' }
  /** 200 with JSON that is not a valid FHIR resource. */
  | { kind: 'invalid-fhir' }
  /** Reads the request and never answers. */
  | { kind: 'hang' };

export interface Received {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  at: number;
}

export interface StandInOptions {
  /** Required bearer token for the FHIR endpoint (or a token issued by the token endpoint). */
  bearer?: string;
  oauth?: { clientId: string; clientSecret: string; expiresIn: number };
  /** Delay of every normal answer. */
  delayMs?: number;
  /** Keep only the number of requests received, not their bodies (long benchmark runs). */
  countOnly?: boolean;
  /**
   * Answer from a scan of the body's text instead of parsing it (long benchmark runs, where the
   * parse is most of the stand-in's CPU on the cores the exchange uses): the same RiskAssessment
   * as the parse gives, which the first `checkScans` bodies are checked against (once they
   * differ, every answer is a 500, so a run fails rather than measure a different answer). With
   * `countOnly` the body is scanned as Latin-1, never decoded from UTF-8 (half the stand-in's
   * own CPU per body went to that decode and to scanning a two-byte string).
   */
  scanAnswers?: { checkScans: number };
}

export interface StandIn {
  url: string;
  /** FHIR base URL. */
  base: string;
  tokenUrl: string;
  received: Received[];
  tokenRequests: number;
  /** Behaviours to use for the next requests, in order; then `fallback`. */
  queue: Behaviour[];
  fallback: Behaviour;
  /** Tokens the service currently accepts (issued ones; revoke by deleting). */
  validTokens: Set<string>;
  close(): Promise<void>;
}

function riskAssessment(request: unknown): Record<string, unknown> {
  // Find the Bundle (posted as is, or as parameter `bundle` of a Parameters resource).
  const r = request as { resourceType?: string; parameter?: { name: string; resource?: unknown }[] };
  const bundle = (r.resourceType === 'Parameters' ? r.parameter?.find((p) => p.name === 'bundle')?.resource : r) as
    | { entry?: { resource?: { resourceType?: string; id?: string } }[] }
    | undefined;
  const resources = (bundle?.entry ?? []).map((e) => e.resource ?? {});
  const patient = resources.find((x) => x.resourceType === 'Patient');
  const subject = patient?.id ? `Patient/${patient.id}` : (resources.map((x) => (x as { subject?: { reference?: string } }).subject?.reference).find(Boolean) ?? 'Patient/unknown');
  const dates = resources
    .flatMap((x) => {
      const y = x as Record<string, unknown>;
      return [y['effectiveDateTime'], y['authoredOn'], y['recordedDate'], y['date']];
    })
    .filter((d): d is string => typeof d === 'string' && /^\d{4}-\d{2}-\d{2}/.test(d))
    .sort();
  const labs = resources.filter((x) => x.resourceType === 'Observation').length;
  return {
    resourceType: 'RiskAssessment',
    status: 'final',
    subject: { reference: subject },
    ...(dates.length ? { occurrenceDateTime: dates[dates.length - 1] } : {}),
    basis: resources.filter((x) => x.resourceType === 'Condition' && x.id).slice(0, 5).map((x) => ({ reference: `Condition/${x.id}` })),
    prediction: [{ outcome: { text: '5年以内の心血管イベント' }, probabilityDecimal: Math.min(0.95, 0.05 + labs / 100) }],
    note: [{ text: `stand-in model, ${resources.length} resources read` }],
  };
}

// An entry's resource as the exchange writes it: `"resource":{"resourceType":"X","id":"..."` (the
// id right after; contained resources have no "resource" key before them).
const RESOURCE_HEAD = /"resource":\{"resourceType":"([A-Za-z]+)"(?:,"id":"([^"\\]*)")?/g;
const SUBJECT_REF = /"subject":\{"reference":"([^"\\]*)"/;
const DATE_FIELD = /"(?:effectiveDateTime|authoredOn|recordedDate|date)":"(\d{4}-\d{2}-\d{2}[^"\\]*)"/g;

/**
 * riskAssessment of a body read off its text, for bodies written as the exchange writes them
 * (one JSON text, the id after the resourceType; scanAnswers checks it against the parse).
 */
function riskAssessmentOfText(body: string): Record<string, unknown> {
  let patient: string | undefined;
  let resources = 0;
  let labs = 0;
  const conditions: string[] = [];
  let firstResource = -1;
  for (const m of body.matchAll(RESOURCE_HEAD)) {
    const type = m[1]!;
    if (type === 'Parameters' || type === 'Bundle') continue;
    if (firstResource < 0) firstResource = m.index;
    resources++;
    if (type === 'Patient' && patient === undefined && m[2]) patient = m[2];
    else if (type === 'Observation') labs++;
    else if (type === 'Condition' && m[2] && conditions.length < 5) conditions.push(m[2]);
  }
  const subject = patient ? `Patient/${patient}` : (SUBJECT_REF.exec(body.slice(Math.max(firstResource, 0)))?.[1] ?? 'Patient/unknown');
  let last: string | undefined;
  for (const m of body.matchAll(DATE_FIELD)) if (last === undefined || m[1]! > last) last = m[1]!;
  return {
    resourceType: 'RiskAssessment',
    status: 'final',
    subject: { reference: subject },
    ...(last ? { occurrenceDateTime: last } : {}),
    basis: conditions.map((id) => ({ reference: `Condition/${id}` })),
    prediction: [{ outcome: { text: '5年以内の心血管イベント' }, probabilityDecimal: Math.min(0.95, 0.05 + labs / 100) }],
    note: [{ text: `stand-in model, ${resources} resources read` }],
  };
}

export async function startStandIn(opts: StandInOptions = {}): Promise<StandIn> {
  const sockets = new Set<Socket>();
  let counter = 0;
  let scansLeft = opts.scanAnswers?.checkScans;
  let scanMismatch = false;
  const state: Omit<StandIn, 'close' | 'url' | 'base' | 'tokenUrl'> = {
    received: [],
    tokenRequests: 0,
    queue: [],
    fallback: { kind: 'ok' },
    validTokens: new Set(opts.bearer ? [opts.bearer] : []),
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      // Scanned answers read the bytes as Latin-1 (scanAnswers): no UTF-8 decode of every body.
      const body = scansLeft === undefined || !opts.countOnly || req.url === '/oauth/token' ? raw.toString('utf8') : '';
      const send = (status: number, json: unknown, headers: Record<string, string> = {}) => {
        res.writeHead(status, { 'content-type': 'application/fhir+json', ...headers });
        res.end(typeof json === 'string' ? json : JSON.stringify(json));
      };
      if (req.url === '/oauth/token') {
        state.tokenRequests++;
        const auth = req.headers.authorization ?? '';
        const [id, secret] = Buffer.from(auth.replace(/^Basic /, ''), 'base64').toString('utf8').split(':').map(decodeURIComponent);
        const form = new URLSearchParams(body);
        if (!opts.oauth || form.get('grant_type') !== 'client_credentials' || id !== opts.oauth.clientId || secret !== opts.oauth.clientSecret) {
          res.writeHead(401, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: 'invalid_client' }));
          return;
        }
        const token = `tok-${++counter}-${Math.random().toString(36).slice(2)}`;
        state.validTokens.add(token);
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(JSON.stringify({ access_token: token, token_type: 'Bearer', expires_in: opts.oauth.expiresIn }));
        return;
      }
      state.received.push(opts.countOnly ? { method: req.method ?? '', url: '', headers: {}, body: '', at: Date.now() } : { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body, at: Date.now() });
      if (opts.bearer || opts.oauth) {
        const token = (req.headers.authorization ?? '').replace(/^Bearer /, '');
        if (!state.validTokens.has(token)) {
          send(401, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'login' }] }, { 'www-authenticate': 'Bearer' });
          return;
        }
      }
      const b = state.queue.shift() ?? state.fallback;
      const answer = () => {
        if (scansLeft !== undefined) {
          // Latin-1, one character per byte: every byte of a multi-byte UTF-8 character is 0x80 or
          // above, so quotes and backslashes fall where they do in the UTF-8 text, and what the
          // scan takes out (types, ids, dates: ASCII) reads the same; a body where it would not
          // differs from the parse, which the first bodies are checked against.
          const scanned = riskAssessmentOfText(raw.toString('latin1'));
          if (scansLeft > 0) {
            scansLeft--;
            let parsed: unknown;
            try {
              parsed = JSON.parse(raw.toString('utf8'));
            } catch {
              parsed = undefined;
            }
            if (JSON.stringify(scanned) !== JSON.stringify(parsed === undefined ? undefined : riskAssessment(parsed))) scanMismatch = true;
          }
          // Every answer after a mismatch fails: a retry must not hide it.
          if (scanMismatch) {
            send(500, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception', diagnostics: 'stand-in: the scanned answer differs from the parsed one' }] });
            return;
          }
          send(200, scanned);
          return;
        }
        let parsed: unknown;
        try {
          parsed = JSON.parse(body);
        } catch {
          send(400, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invalid' }] });
          return;
        }
        send(200, riskAssessment(parsed));
      };
      switch (b.kind) {
        case 'ok':
          if (opts.delayMs) setTimeout(answer, opts.delayMs);
          else answer();
          return;
        case 'late':
          setTimeout(answer, b.ms);
          return;
        case 'error':
          send(b.status, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception' }] }, b.retryAfter ? { 'retry-after': b.retryAfter } : {});
          return;
        case 'not-json':
          res.writeHead(200, { 'content-type': 'text/html' });
          res.end('<html><body>Service temporarily moved</body></html>');
          return;
        case 'invalid-fhir':
          send(200, { resourceType: 'RiskAssessment', prediction: 'high' });
          return;
        case 'hang':
          return;
      }
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  const standIn = state as StandIn;
  standIn.url = url;
  standIn.base = `${url}/fhir`;
  standIn.tokenUrl = `${url}/oauth/token`;
  standIn.close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  return standIn;
}
