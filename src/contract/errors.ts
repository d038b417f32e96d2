import type { ErrorBody, ErrorCode } from './schemas';

/** An error with a code from the contract and a message a person can act on. */
export class WorkerManagerError extends Error {
  constructor(
    public readonly code: ErrorCode,
    message: string,
    public readonly details?: Record<string, string>,
  ) {
    super(message);
    this.name = 'WorkerManagerError';
  }

  toBody(): ErrorBody {
    return { code: this.code, message: this.message, ...(this.details ? { details: this.details } : {}) };
  }
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
]);

const UNAVAILABLE_HINTS = [
  /ECONNREFUSED/,
  /ECONNRESET/,
  /ETIMEDOUT/,
  /EHOSTUNREACH/,
  /ENOTFOUND/,
  /socket hang up/i,
  /Connection is closed/i,
  /connect ENOENT/,
  /Deadline exceeded/i,
  /Reached the max retries per request/i,
  // ioredis without an offline queue, while it is not connected:
  /Stream isn.t writeable/i,
  // @grpc/grpc-js when Temporal never answered while connecting:
  /Failed to connect before the deadline/i,
];

/**
 * Maps any thrown value to a contract error: backing-service outages become UNAVAILABLE. `service`
 * (e.g. "Redis at redis://host:6379") names the one that failed, when the caller knows it.
 */
export function toContractError(err: unknown, service?: string): WorkerManagerError {
  if (err instanceof WorkerManagerError) return err;
  const e = err as { code?: unknown; message?: unknown; cause?: { code?: unknown }; errors?: { code?: unknown; message?: unknown }[] };
  // An AggregateError (Node trying each address of a host name) has an empty message of its own.
  const inner = Array.isArray(e?.errors) ? e.errors : [];
  const message =
    (typeof e?.message === 'string' && e.message) ||
    inner
      .map((x) => String(x?.message ?? ''))
      .filter(Boolean)
      .join('; ') ||
    String(e?.code ?? err);
  // gRPC status 14 (UNAVAILABLE) and 4 (DEADLINE_EXCEEDED), directly or as a ServiceError's cause;
  // Node's network error codes, directly or inside an AggregateError.
  const codes = [e?.code, e?.cause?.code, ...inner.map((x) => x?.code)];
  if (
    codes.some((c) => c === 14 || c === 4 || (typeof c === 'string' && NETWORK_CODES.has(c))) ||
    UNAVAILABLE_HINTS.some((re) => re.test(message))
  ) {
    return new WorkerManagerError('UNAVAILABLE', `${service ?? 'a backing service'} is unavailable, retry later: ${message}`);
  }
  return new WorkerManagerError('INTERNAL', message);
}
