/**
 * The model gateway: the only way workers reach the agents' model API, so no real API key is ever
 * inside a container. It listens at host.docker.internal (the Docker host's gateway address; on
 * the egress network the host rules and the proxy let it through), takes a per-worker token
 * (src/contract/gatewayToken.ts) where the CLI sends its API key, and forwards the request to the real
 * endpoint with the real key instead, streaming the reply back chunk by chunk as it arrives.
 *
 * On the way it meters: every model request (POST .../messages) and the token usage its reply
 * reports (src/contract/usage.ts), per worker, per running task and in total, and enforces the worker's
 * budget before forwarding. Tokens are accepted only while registered: from the worker's launch
 * until its container is removed; every request looks its token up in Redis (no cache), so a
 * revoked token is refused at once.
 */
import http from 'node:http';
import https from 'node:https';
import type Docker from 'dockerode';
import type Redis from 'ioredis';
import type { Log } from '../shared/log';
import type { Config } from '../config/config';
import type { AgentType, Budget, ModelUsage, TokenUsage, WorkerSpec } from '../contract/schemas';
import { hostGatewayIp } from './egress/gateway';
import { HOST_ALIAS } from './egress/allowList';
import { GATEWAY_KEY_ENV, GATEWAY_URL_ENV, gatewayToken, newGatewayKey, tokenDigest, USAGE_PATH } from '../contract/gatewayToken';
import { keys } from '../contract/keys';
import { LIMITS } from '../contract/limits';
import { listen } from './listen';
import { lifecycleXadd } from '../contract/codec';
import { TOKEN_FIELDS, UsageMeter, usageFromHash } from '../contract/usage';

/** What a registered token stands for (kept in Redis under the token's digest). */
export interface GatewayGrant {
  worker_id: string;
  agent_type: AgentType;
  budget?: Budget;
}

/** The gateway's answer to the wrapper at the end of a task (GET /wm/usage?task_id=...). */
export interface TaskUsageReply {
  usage: ModelUsage;
  budget_exceeded: boolean;
}

/** The URL workers use for the gateway. */
export const gatewayUrl = (config: Pick<Config, 'MODEL_GATEWAY_PORT'>) => `http://${HOST_ALIAS}:${config.MODEL_GATEWAY_PORT}`;

/**
 * The agent's endpoint and credential variables for a container, from the manager's config.
 * Through the gateway (the container gets its URL and a key to derive its token from) wherever
 * the gateway can stand in: Claude Code with an API key, droid's custom model. Claude Code on
 * the host's session and droid on Factory's own service use their own credentials (README).
 */
export function agentEnv(config: Config, spec: Pick<WorkerSpec, 'agentType' | 'authMode'>): string[] {
  const viaGateway = [`${GATEWAY_KEY_ENV}=${newGatewayKey()}`, `${GATEWAY_URL_ENV}=${gatewayUrl(config)}`];
  if (spec.agentType === 'CLAUDE') {
    if (spec.authMode === 'api_key') return [...viaGateway, `ANTHROPIC_BASE_URL=${gatewayUrl(config)}`];
    return config.ANTHROPIC_BASE_URL ? [`ANTHROPIC_BASE_URL=${config.ANTHROPIC_BASE_URL}`] : [];
  }
  const model = config.FACTORY_MODEL_NAME ? [`WORKER_FACTORY_MODEL_NAME=${config.FACTORY_MODEL_NAME}`] : [];
  if (config.FACTORY_BASE_URL) return [...viaGateway, `WORKER_FACTORY_BASE_URL=${gatewayUrl(config)}`, ...model];
  return [...(config.FACTORY_API_KEY ? [`FACTORY_API_KEY=${config.FACTORY_API_KEY}`] : []), ...model];
}

/**
 * The tokens one deployment registered (its scope: src/config/redisAcl.ts's aclScope, from the
 * Temporal namespace and task queue), indexed so that the orphan reaper finds the tokens of
 * workers that ended while no manager watched, and never another deployment's.
 */
export class GatewayTokens {
  private readonly index: string;

  constructor(
    private readonly redis: Redis,
    scope: string,
  ) {
    this.index = keys.gatewayWorkers(scope);
  }

  /**
   * Registers the token of a worker's container (derived from the key in its environment) for the
   * worker. Idempotent: the same container always yields the same token. A container without a
   * key (its agent does not use the gateway) registers nothing.
   */
  async grant(
    info: Pick<Docker.ContainerInspectInfo, 'Config'>,
    spec: Pick<WorkerSpec, 'workerId' | 'agentType' | 'budget'>,
  ): Promise<void> {
    const key = info.Config?.Env?.find((e) => e.startsWith(`${GATEWAY_KEY_ENV}=`))?.slice(GATEWAY_KEY_ENV.length + 1);
    if (!key) return;
    const digest = tokenDigest(gatewayToken(key, spec.workerId));
    const grant: GatewayGrant = { worker_id: spec.workerId, agent_type: spec.agentType, ...(spec.budget ? { budget: spec.budget } : {}) };
    await this.redis
      .multi()
      .sadd(this.index, spec.workerId)
      .set(keys.gatewayToken(digest), JSON.stringify(grant))
      .set(keys.gatewayGrant(spec.workerId), digest)
      .exec();
  }

  /** Revokes the worker's token: the gateway refuses it from the next request on. */
  async revoke(workerId: string): Promise<void> {
    const digest = await this.redis.get(keys.gatewayGrant(workerId));
    await this.redis
      .multi()
      .del(...(digest ? [keys.gatewayToken(digest)] : []), keys.gatewayGrant(workerId))
      .srem(this.index, workerId)
      .exec();
  }

  /** The workers of this deployment with a registered token. */
  workerIds(): Promise<string[]> {
    return this.redis.smembers(this.index);
  }
}

/**
 * Admits a model request against the worker's budget: counts it when within, and returns the
 * task the worker is running (its wrapper's running-task key) so the usage is the task's too.
 */
const ADMIT = `
local u = redis.call('HMGET', KEYS[1], 'requests', 'input_tokens', 'output_tokens', 'cache_read_input_tokens', 'cache_creation_input_tokens')
local task = redis.call('GET', KEYS[2]) or ''
local tokens = 0
for i = 2, 5 do tokens = tokens + tonumber(u[i] or '0') end
local maxTokens, maxRequests = tonumber(ARGV[1]), tonumber(ARGV[2])
if (maxRequests > 0 and tonumber(u[1] or '0') >= maxRequests) or (maxTokens > 0 and tokens >= maxTokens) then
  return {0, task, tonumber(u[1] or '0'), tokens}
end
redis.call('HINCRBY', KEYS[1], 'requests', 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, task, 0, 0}`;

/**
 * Copies the worker's totals into its status hash as JSON (if the worker has a status); returns
 * the totals' hash. Shared by RECORD and COPY_TO_STATUS.
 */
const COPY_FUNCTION = `
local function copyToStatus(usageKey, statusKey)
  local h = redis.call('HGETALL', usageKey)
  if #h > 0 and redis.call('EXISTS', statusKey) == 1 then
    local u = {requests = 0, input_tokens = 0, output_tokens = 0, cache_read_input_tokens = 0, cache_creation_input_tokens = 0}
    for i = 1, #h, 2 do u[h[i]] = tonumber(h[i + 1]) end
    redis.call('HSET', statusKey, 'usage', cjson.encode(u))
  end
  return h
end`;

/** KEYS: worker usage, status. Returns the worker usage hash (flat). */
const COPY_TO_STATUS = `${COPY_FUNCTION}
return copyToStatus(KEYS[1], KEYS[2])`;

/**
 * Adds a finished request's tokens to the worker's totals, its task's (one request more there)
 * and the manager's (stats). The status hash's copy of the totals is written at the end of each
 * task (taskUsage, asked by the wrapper before its task_completed) and at the worker's end
 * (recordStatus), not per request; only a request made outside any task copies them at once.
 * KEYS: worker usage, task usage (or ''), stats, status. ARGV: ttl, then the four token counts.
 */
const RECORD = `${COPY_FUNCTION}
local fields = {'input_tokens', 'output_tokens', 'cache_read_input_tokens', 'cache_creation_input_tokens'}
redis.call('HINCRBY', KEYS[3], 'usage_requests', 1)
if KEYS[2] ~= '' then redis.call('HINCRBY', KEYS[2], 'requests', 1) end
for i, f in ipairs(fields) do
  local n = tonumber(ARGV[i + 1])
  if n > 0 then
    redis.call('HINCRBY', KEYS[1], f, n)
    redis.call('HINCRBY', KEYS[3], 'usage_' .. f, n)
    if KEYS[2] ~= '' then redis.call('HINCRBY', KEYS[2], f, n) end
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
if KEYS[2] ~= '' then redis.call('EXPIRE', KEYS[2], ARGV[6]) end
if KEYS[2] == '' then copyToStatus(KEYS[1], KEYS[4]) end
return 1`;

/** How many workers' last reported totals the gateway remembers. */
const REPORTED_MAX = 10_000;

/** Headers that belong to one hop, or that the gateway sets itself. */
const HOP_HEADERS = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'host',
  'x-api-key',
  'authorization',
  'accept-encoding',
]);

const endToEnd = (headers: http.IncomingHttpHeaders): http.OutgoingHttpHeaders => {
  const out: http.OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) if (!HOP_HEADERS.has(k) && v !== undefined) out[k] = v;
  return out;
};

function anthropicError(res: http.ServerResponse, status: number, type: string, message: string): void {
  if (res.headersSent) return void res.destroy();
  // x-should-retry: the Anthropic SDKs (and so the CLIs) do not retry a refusal that will not change.
  res.writeHead(status, { 'content-type': 'application/json', 'x-should-retry': 'false' });
  res.end(JSON.stringify({ type: 'error', error: { type, message } }));
}

interface Upstream {
  base: URL;
  key?: string;
}

export interface GatewayStats {
  requests: number;
  refused: { unauthorized: number; budget: number };
  upstream_errors: number;
}

export interface GatewayDeps {
  config: Config;
  redis: Redis;
  log: Log;
  /** Told the worker's usage totals at the end of each of its tasks (the manager signals its workflow). */
  onTaskEnd?: (workerId: string, usage: ModelUsage) => Promise<void>;
}

export class ModelGateway {
  private readonly server: http.Server;
  private readonly agents = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };
  /** Requests in flight per worker: the usage a task's end asks for waits for them to be recorded. */
  private readonly inflight = new Map<string, Set<Promise<void>>>();
  private readonly counts: GatewayStats = { requests: 0, refused: { unauthorized: 0, budget: 0 }, upstream_errors: 0 };
  /**
   * The totals last told to each worker's workflow (onTaskEnd): the agent holds the token and may
   * ask for its usage at will, so only a change is signalled (at most one signal per model request).
   * Bounded: the oldest entries go first, which costs at most one repeated signal each.
   */
  private readonly reported = new Map<string, string>();

  constructor(private readonly opts: GatewayDeps) {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: Error) => {
        this.opts.log.warn('model gateway request failed', { error: err.message });
        anthropicError(res, 500, 'api_error', `worker-manager model gateway: ${err.message}`);
      });
    });
    this.server.on('clientError', (_err, socket) => socket.destroy());
  }

  async listen(host: string, port: number): Promise<number> {
    const bound = await listen(
      this.server,
      { host, port },
      {
        what: 'model gateway server',
        log: this.opts.log,
        cannotListen: (err) =>
          new Error(
            `the model gateway cannot listen on ${host}:${port}: ${err.code === 'EADDRINUSE' ? 'the port is in use (another manager on this Docker host? set MODEL_GATEWAY_PORT)' : err.message}`,
          ),
      },
    );
    return bound.port;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
    this.agents.http.destroy();
    this.agents.https.destroy();
  }

  stats(): GatewayStats {
    return { ...this.counts, refused: { ...this.counts.refused } };
  }

  private upstreamFor(agent: AgentType): Upstream | undefined {
    const c = this.opts.config;
    if (agent === 'CLAUDE') return { base: new URL(c.ANTHROPIC_BASE_URL ?? 'https://api.anthropic.com'), key: c.ANTHROPIC_API_KEY };
    return c.FACTORY_BASE_URL ? { base: new URL(c.FACTORY_BASE_URL), key: c.FACTORY_API_KEY } : undefined;
  }

  private async authenticate(req: http.IncomingMessage): Promise<GatewayGrant | undefined> {
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
    const token = (req.headers['x-api-key'] as string | undefined) ?? bearer;
    if (!token) return undefined;
    const raw = await this.opts.redis.get(keys.gatewayToken(tokenDigest(token)));
    return raw ? (JSON.parse(raw) as GatewayGrant) : undefined;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const grant = await this.authenticate(req);
    if (!grant) {
      this.counts.refused.unauthorized++;
      req.resume();
      return anthropicError(res, 401, 'authentication_error', 'worker-manager model gateway: unknown or revoked worker token');
    }
    const url = new URL(req.url ?? '/', 'http://gateway');
    if (req.method === 'GET' && url.pathname === USAGE_PATH) return this.taskUsage(grant, url.searchParams.get('task_id'), res);
    const upstream = this.upstreamFor(grant.agent_type);
    if (!upstream) {
      req.resume();
      return anthropicError(
        res,
        400,
        'invalid_request_error',
        `worker-manager model gateway: no model endpoint is configured for ${grant.agent_type} workers`,
      );
    }
    // Model calls are metered and budgeted; anything else (count_tokens, model lists) just passes.
    const modelCall = req.method === 'POST' && /\/messages$/.test(url.pathname);
    let task = '';
    if (modelCall) {
      const admitted = await this.admit(grant);
      task = admitted.task;
      if (!admitted.ok) {
        req.resume();
        return this.refuseOverBudget(grant, admitted, res);
      }
    }
    this.counts.requests++;
    this.forward(req, res, upstream, modelCall ? { workerId: grant.worker_id, task } : undefined);
  }

  /**
   * How long a live worker's usage (and so its budget count) outlives its latest request: past the
   * longest gap a session allows (a week of PAUSED, src/contract/limits.ts), so a long pause never
   * resets a budget. The final status write shortens it to the status's own retention.
   */
  private get usageTtl(): number {
    return this.opts.config.STATUS_RETENTION_SECONDS + LIMITS.durationS;
  }

  private async admit(grant: GatewayGrant): Promise<{ ok: boolean; task: string; requests: number; tokens: number }> {
    const b = grant.budget;
    const [ok, task, requests, tokens] = (await this.opts.redis.eval(
      ADMIT,
      2,
      keys.usage(grant.worker_id),
      keys.inputRunning(grant.worker_id),
      b?.max_tokens ?? 0,
      b?.max_requests ?? 0,
      this.usageTtl,
    )) as [number, string, number, number];
    return { ok: ok === 1, task, requests, tokens };
  }

  private async refuseOverBudget(
    grant: GatewayGrant,
    spent: { task: string; requests: number; tokens: number },
    res: http.ServerResponse,
  ): Promise<void> {
    this.counts.refused.budget++;
    const { redis, config } = this.opts;
    const b = grant.budget ?? {};
    const message = `worker-manager model gateway: the worker's model budget is spent (${spent.requests} requests${b.max_requests ? ` of ${b.max_requests}` : ''}, ${spent.tokens} tokens${b.max_tokens ? ` of ${b.max_tokens}` : ''})`;
    // The running task ends budget_exceeded (the wrapper asks at its end); one event per task.
    const first = spent.task ? await redis.hsetnx(keys.taskUsage(grant.worker_id, spent.task), 'budget_exceeded', '1') : 1;
    if (spent.task) await redis.expire(keys.taskUsage(grant.worker_id, spent.task), config.STATUS_RETENTION_SECONDS);
    if (first) {
      await redis.xadd(
        ...lifecycleXadd({
          worker_id: grant.worker_id,
          event: 'budget_exceeded',
          task_id: spent.task,
          detail: { budget: b, requests: spent.requests, tokens: spent.tokens },
        }),
      );
      this.opts.log.info('model budget spent: requests refused', { worker_id: grant.worker_id, task_id: spent.task || null, budget: b });
    }
    anthropicError(res, 400, 'budget_exceeded', message);
  }

  private forward(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    upstream: Upstream,
    metered: { workerId: string; task: string } | undefined,
  ): void {
    const headers = endToEnd(req.headers);
    // The real key, where the client put its token. Identity encoding: the meter reads the reply.
    if (upstream.key) {
      if (req.headers['x-api-key'] || !req.headers.authorization) headers['x-api-key'] = upstream.key;
      else headers.authorization = `Bearer ${upstream.key}`;
    }
    headers['accept-encoding'] = 'identity';
    const target = new URL(upstream.base.href.replace(/\/+$/, '') + (req.url ?? '/'));
    const secure = target.protocol === 'https:';
    let meter: UsageMeter | undefined;
    let finished = false;
    let settle = () => {};
    const finish = () => {
      if (finished) return;
      finished = true;
      if (!metered) return settle();
      this.record(metered.workerId, metered.task, meter?.end())
        .catch((err: Error) => this.opts.log.warn('model usage not recorded', { worker_id: metered.workerId, error: err.message }))
        .finally(settle);
    };
    if (metered) this.track(metered.workerId, new Promise<void>((r) => (settle = r)));
    const up = (secure ? https : http).request(target, {
      method: req.method,
      headers,
      agent: secure ? this.agents.https : this.agents.http,
    });
    up.on('response', (reply) => {
      res.writeHead(reply.statusCode ?? 502, endToEnd(reply.headers));
      res.flushHeaders();
      if (metered) {
        const m = (meter = new UsageMeter(reply.headers['content-type']));
        reply.on('data', (chunk: Buffer) => m.push(chunk));
      }
      reply.pipe(res);
      reply.once('close', finish);
    });
    up.on('error', (err: NodeJS.ErrnoException) => {
      this.counts.upstream_errors++;
      anthropicError(res, 502, 'api_error', `worker-manager model gateway: could not reach ${target.origin}: ${err.code ?? err.message}`);
      finish();
    });
    // The client went away mid-reply (a cancelled task): stop the upstream request too.
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  }

  private async record(workerId: string, task: string, usage: TokenUsage | undefined): Promise<void> {
    await this.opts.redis.eval(
      RECORD,
      4,
      keys.usage(workerId),
      task ? keys.taskUsage(workerId, task) : '',
      keys.stats,
      keys.status(workerId),
      this.usageTtl,
      ...TOKEN_FIELDS.map((f) => usage?.[f] ?? 0),
      // A task's own usage: the status's retention (only the worker's totals carry the budget).
      this.opts.config.STATUS_RETENTION_SECONDS,
    );
  }

  private track(workerId: string, done: Promise<void>): void {
    let set = this.inflight.get(workerId);
    if (!set) this.inflight.set(workerId, (set = new Set()));
    set.add(done);
    void done.then(() => {
      set.delete(done);
      if (!set.size && this.inflight.get(workerId) === set) this.inflight.delete(workerId);
    });
  }

  /**
   * A task's usage, once the worker's requests in flight are recorded (waiting at most 2 s). The
   * wrapper asks at the end of every task, before it writes task_completed: so the worker's
   * totals go into its status hash here, and to its workflow (the Temporal UI's current details)
   * once the wrapper has its answer.
   */
  private async taskUsage(grant: GatewayGrant, taskId: string | null, res: http.ServerResponse): Promise<void> {
    const { redis } = this.opts;
    const workerId = grant.worker_id;
    const pending = [...(this.inflight.get(workerId) ?? [])];
    if (pending.length) await Promise.race([Promise.all(pending), new Promise((r) => setTimeout(r, 2_000).unref())]);
    const [hash, flat] = await Promise.all([
      taskId ? redis.hgetall(keys.taskUsage(workerId, taskId)) : ({} as Record<string, string>),
      redis.eval(COPY_TO_STATUS, 2, keys.usage(workerId), keys.status(workerId)) as Promise<string[]>,
    ]);
    const reply: TaskUsageReply = { usage: usageFromHash(hash), budget_exceeded: hash.budget_exceeded === '1' };
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(reply));
    if (flat.length && this.opts.onTaskEnd) {
      const totals: Record<string, string> = {};
      for (let i = 0; i + 1 < flat.length; i += 2) totals[flat[i]!] = flat[i + 1]!;
      const usage = usageFromHash(totals);
      const seen = JSON.stringify(usage);
      if (this.reported.get(workerId) === seen) return;
      this.reported.delete(workerId);
      this.reported.set(workerId, seen);
      if (this.reported.size > REPORTED_MAX) this.reported.delete(this.reported.keys().next().value!);
      this.opts.onTaskEnd(workerId, usage).catch((err: Error) => {
        if (this.reported.get(workerId) === seen) this.reported.delete(workerId); // told again next time
        this.opts.log.warn("model usage not reported to the worker's workflow", { worker_id: workerId, error: err.message });
      });
    }
  }
}

/**
 * Starts the gateway at host.docker.internal (the Docker host's gateway address). With
 * MODEL_GATEWAY_PORT=0 it takes a free port and writes it into `config`, which the containers'
 * environment and the egress host rules are built from afterwards.
 */
export async function startModelGateway(deps: GatewayDeps & { docker: Docker }): Promise<ModelGateway> {
  const { config, docker, log } = deps;
  const gateway = new ModelGateway(deps);
  const host = await hostGatewayIp(docker);
  config.MODEL_GATEWAY_PORT = await gateway.listen(host, config.MODEL_GATEWAY_PORT);
  log.info('model gateway listening', { address: `${host}:${config.MODEL_GATEWAY_PORT}`, url: gatewayUrl(config) });
  return gateway;
}
