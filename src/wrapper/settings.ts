/**
 * The container's environment, read once at start. The manager sets it at create time (workerEnv in
 * src/host/container.ts; a warm-pool container's in src/host/warmPool.ts). A required variable that is
 * missing or empty ends the wrapper with exit code 2.
 */
import { redisEndpointFromEnv, type RedisEndpoint } from '../config/connections';
import { GATEWAY_KEY_ENV, GATEWAY_URL_ENV } from '../contract/gatewayToken';
import { protocols, type AgentProtocol } from './agents';
import { say } from './log';

export interface WrapperSettings {
  /** Known at create time, or (a warm-pool container) learnt from the claim in standby.ts. */
  who: { workerId: string } | { poolSlot: string };
  agentType: string;
  agent: AgentProtocol;
  workspace: string;
  allowedCommands: string[];
  defaultTimeoutS: number;
  /** How long the running task may go on after SIGTERM. */
  shutdownGraceMs: number;
  /** Entries kept in the output stream. */
  outputMaxLen: number;
  /** Tests and benchmarks: a stand-in executable run instead of the agent CLI. */
  agentCommand?: string;
  model?: string;
  /**
   * Only a worker the manager started has a status hash to keep current (a bare wrapper, as the
   * benchmarks run one, must not make a partial one); its Redis user may write that hash, not read it.
   */
  reportsActivity: boolean;
  /** URL, ACL credentials and TLS material (PEM text). */
  redis: RedisEndpoint;
  /** The model gateway (src/contract/gatewayToken.ts): its URL, and the key the worker's token derives from. */
  gateway?: { url: string; key: string };
  /** droid's custom model, when it goes through the model gateway. */
  factory: { baseUrl?: string; modelName?: string; apiKey?: string };
}

/** What the agent CLI (and whatever its tools run) inherits must not carry these: the settings keep them. */
const SECRETS = ['WORKER_REDIS_PASSWORD', 'WORKER_REDIS_TLS_KEY_PEM', GATEWAY_KEY_ENV];

export function readSettings(env: NodeJS.ProcessEnv): WrapperSettings {
  const required = (name: string, fallback?: string): string => {
    const v = env[name] ?? fallback;
    if (v === undefined || v === '') {
      say(`missing environment variable ${name}`);
      process.exit(2);
    }
    return v;
  };
  const poolSlot = env.WORKER_POOL_SLOT;
  const agentType = required('WORKER_AGENT_TYPE');
  const agent: AgentProtocol | undefined = protocols[agentType];
  if (!agent) {
    say(`unknown WORKER_AGENT_TYPE ${agentType}`);
    process.exit(2);
  }
  const gatewayKey = env[GATEWAY_KEY_ENV];
  const gatewayUrl = env[GATEWAY_URL_ENV];
  required('WORKER_REDIS_URL');
  return {
    who: poolSlot && !env.WORKER_ID ? { poolSlot } : { workerId: required('WORKER_ID') },
    agentType,
    agent,
    workspace: required('WORKER_WORKSPACE', '/workspace'),
    allowedCommands: JSON.parse(required('WORKER_ALLOWED_COMMANDS', '[]')) as string[],
    defaultTimeoutS: Number(required('WORKER_TASK_TIMEOUT_S', '1800')),
    shutdownGraceMs: Number(required('WORKER_SHUTDOWN_GRACE_S', '5')) * 1000,
    outputMaxLen: Number(required('WORKER_OUTPUT_MAXLEN', '100000')),
    agentCommand: env.WORKER_AGENT_COMMAND,
    model: env.WORKER_AGENT_MODEL,
    reportsActivity: env.WORKER_REPORT_ACTIVITY === '1',
    redis: redisEndpointFromEnv(env),
    gateway: gatewayKey && gatewayUrl ? { url: gatewayUrl, key: gatewayKey } : undefined,
    factory: { baseUrl: env.WORKER_FACTORY_BASE_URL, modelName: env.WORKER_FACTORY_MODEL_NAME, apiKey: env.FACTORY_API_KEY },
  };
}

/** Removes the secrets from `env` once they are read: the agent CLI inherits the wrapper's environment. */
export function hideSecrets(env: NodeJS.ProcessEnv): void {
  for (const name of SECRETS) delete env[name];
}
