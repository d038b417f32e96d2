/**
 * A worker's model-gateway token (src/host/modelGateway.ts), derived rather than handed over: the
 * container gets a random key at create time (WORKER_GATEWAY_KEY), and the token is
 * HMAC-SHA256(key, worker id). The wrapper derives it once it knows its worker id (a warm-pool
 * container learns it only when claimed); the launch activity derives the same token from the
 * container's environment and registers its SHA-256. So the token never passes through Redis,
 * Temporal or the claim, and a retried launch registers the same token again. Bundled into the
 * wrapper: node:crypto only.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';

export const GATEWAY_KEY_ENV = 'WORKER_GATEWAY_KEY';
/** The gateway's URL, for the wrapper's own question (USAGE_PATH) at the end of each task. */
export const GATEWAY_URL_ENV = 'WORKER_GATEWAY_URL';
/** GET with the worker's token and ?task_id=: the task's usage (TaskUsageReply in src/host/modelGateway.ts). */
export const USAGE_PATH = '/wm/usage';

export const newGatewayKey = (): string => randomBytes(32).toString('hex');

export const gatewayToken = (key: string, workerId: string): string => `wm-${createHmac('sha256', key).update(workerId).digest('hex')}`;

/** What Redis keeps of a token: its SHA-256, so a Redis reader learns no token. */
export const tokenDigest = (token: string): string => createHash('sha256').update(token).digest('hex');
