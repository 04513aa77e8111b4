/**
 * The exchange's one error vocabulary. Every module throws these; the HTTP layer renders them as
 * problem+json (or a FHIR OperationOutcome under /fhir) and the CLI as a message and exit code.
 * `message` is written for the client and must never carry internal detail (SQL, stack, paths
 * on the exchange's disk); anything else thrown is an internal error and is shown as a bare 500.
 */
export type ErrorCode =
  | 'bad-request'
  | 'unauthorized'
  | 'forbidden'
  | 'not-found'
  | 'conflict'
  | 'payload-too-large'
  | 'unprocessable'
  | 'too-many-requests'
  | 'unavailable'
  | 'not-implemented';

const STATUS: Record<ErrorCode, number> = {
  'bad-request': 400,
  unauthorized: 401,
  forbidden: 403,
  'not-found': 404,
  conflict: 409,
  'payload-too-large': 413,
  unprocessable: 422,
  'too-many-requests': 429,
  unavailable: 503,
  'not-implemented': 501,
};

/** FHIR IssueType for each code (http://hl7.org/fhir/R4/valueset-issue-type.html). */
const FHIR_ISSUE: Record<ErrorCode, string> = {
  'bad-request': 'invalid',
  unauthorized: 'login',
  forbidden: 'forbidden',
  'not-found': 'not-found',
  conflict: 'conflict',
  'payload-too-large': 'too-costly',
  unprocessable: 'processing',
  'too-many-requests': 'throttled',
  unavailable: 'transient',
  'not-implemented': 'not-supported',
};

export class ExchangeError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** Extra fields for the client (safe to show), e.g. which hashes are still missing. */
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'ExchangeError';
    this.status = STATUS[code];
  }

  get fhirIssueType(): string {
    return FHIR_ISSUE[this.code];
  }
}

export const badRequest = (message: string, details?: Record<string, unknown>) =>
  new ExchangeError('bad-request', message, details);
export const notFound = (message: string, details?: Record<string, unknown>) =>
  new ExchangeError('not-found', message, details);
export const conflict = (message: string, details?: Record<string, unknown>) =>
  new ExchangeError('conflict', message, details);
export const forbidden = (message: string, details?: Record<string, unknown>) =>
  new ExchangeError('forbidden', message, details);
export const unauthorized = (message: string, details?: Record<string, unknown>) =>
  new ExchangeError('unauthorized', message, details);

export function isExchangeError(e: unknown): e is ExchangeError {
  return e instanceof ExchangeError;
}
