/**
 * The worker container: its environment, its hardened settings and its network. One spec for a
 * worker's own container (activities/docker.ts) and a warm-pool one (warmPool.ts).
 */
import type Docker from 'dockerode';
import type { Config } from '../config/config';
import { workerRedisEnv } from '../config/connections';
import type { WorkerSpec } from '../contract/schemas';
import { WORKSPACE_DIR } from '../shared/instructions';
import { egressContainerEnv, ensureEgressNetwork, workerNetworkName } from './egress/gateway';
import { LABELS } from './labels';
import { agentEnv } from './modelGateway';
import { ensureNetwork } from './network';
import { workspaceMount } from './volumes';

/** Where a worker's settings reach its wrapper: everything but its identity (WORKER_ID). */
export function workerEnv(
  config: Config,
  spec: Pick<WorkerSpec, 'agentType' | 'authMode' | 'allowedCommands' | 'stopGraceSeconds' | 'taskId'>,
): string[] {
  return [
    ...workerRedisEnv(config), // URL, credentials, TLS material: create time only, never in history
    `WORKER_AGENT_TYPE=${spec.agentType}`,
    `WORKER_INSTRUCTIONS_FILE=${WORKSPACE_DIR}/${spec.agentType === 'CLAUDE' ? 'CLAUDE.md' : 'AGENTS.md'}`,
    `WORKER_ALLOWED_COMMANDS=${JSON.stringify(spec.allowedCommands)}`,
    `WORKER_TASK_TIMEOUT_S=${config.TASK_TIMEOUT_SECONDS}`,
    // The wrapper's share of docker stop's grace period: the rest is for flushing and exiting.
    `WORKER_SHUTDOWN_GRACE_S=${Math.max(1, spec.stopGraceSeconds - 5)}`,
    'CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1',
    'WORKER_REPORT_ACTIVITY=1', // last_activity_at in worker:status:{id}
    ...(spec.taskId ? [`WORKER_TASK_ID=${spec.taskId}`] : []),
    ...agentEnv(config, spec), // the model gateway's URL and token key, never the model API's key
    ...egressContainerEnv(config), // the egress allow-list's proxy (src/host/egress/gateway.ts); none when unset
  ];
}

/** The hardened container settings every worker gets (name, env and labels are the caller's). */
export function containerOptions(
  config: Config,
  spec: Pick<WorkerSpec, 'memoryBytes' | 'nanoCpus' | 'authMode' | 'hostClaudeDir' | 'modules'>,
  image: string,
): Docker.ContainerCreateOptions {
  return {
    Image: image,
    User: 'worker',
    WorkingDir: WORKSPACE_DIR,
    HostConfig: {
      Memory: spec.memoryBytes,
      MemorySwap: spec.memoryBytes, // no swap beyond the limit
      NanoCpus: spec.nanoCpus,
      PidsLimit: config.WORKER_PIDS_LIMIT,
      NetworkMode: workerNetworkName(config), // <WORKER_NETWORK>-egress with the egress allow-list
      ExtraHosts: ['host.docker.internal:host-gateway'],
      // host_session auth: the host's Claude directory, read-only (the client checked its root).
      ...(spec.authMode === 'host_session' && spec.hostClaudeDir ? { Binds: [`${spec.hostClaudeDir}:/opt/worker/host-claude:ro`] } : {}),
      // The DOCKER module runs its own engine: only with ALLOW_PRIVILEGED_WORKERS (the client
      // refuses it otherwise), and then the container is privileged, so root inside it is
      // root on the host. Everyone else: no new privileges, no capabilities.
      ...(spec.modules.includes('DOCKER') ? { Privileged: true } : { SecurityOpt: ['no-new-privileges'], CapDrop: ['ALL'] }),
      Init: false, // tini is the image's entrypoint
      RestartPolicy: { Name: 'no' },
    },
  };
}

/**
 * The network workers go on: the egress-restricted one (with its host rules, checked and repaired
 * before each restricted container is created; a problem throws EgressSetupError), or the plain one.
 */
async function ensureWorkerNetwork(docker: Docker, config: Config): Promise<void> {
  if (config.WORKER_EGRESS_ALLOW) {
    await ensureEgressNetwork(docker, config);
    return;
  }
  await ensureNetwork(docker, {
    Name: config.WORKER_NETWORK,
    Driver: 'bridge',
    CheckDuplicate: true,
    Labels: { [LABELS.managed]: 'true' },
    // Workers reach Redis on the host but not each other.
    Options: { 'com.docker.network.bridge.enable_icc': 'false' },
  });
}

/**
 * Creates a container with the hardened worker settings on the worker network: a worker's own
 * (labelled with its id) or a warm-pool container (warmPool.ts). Not started.
 */
export async function createWorkerContainer(
  docker: Docker,
  config: Config,
  input: {
    name: string;
    spec: Parameters<typeof containerOptions>[1] & Pick<WorkerSpec, 'agentType'>;
    image: string;
    env: string[];
    labels: Record<string, string>;
    /** The worker's volume, mounted at /workspace (src/host/volumes.ts); none for a warm-pool container. */
    volume?: string;
  },
): Promise<Docker.Container> {
  await ensureWorkerNetwork(docker, config);
  const options = containerOptions(config, input.spec, input.image);
  if (input.volume) options.HostConfig = { ...options.HostConfig, Mounts: workspaceMount(input.volume) };
  return docker.createContainer({
    name: input.name,
    ...options,
    Env: input.env,
    Labels: {
      [LABELS.managed]: 'true',
      [LABELS.agentType]: input.spec.agentType,
      [LABELS.taskQueue]: config.TEMPORAL_TASK_QUEUE,
      ...input.labels,
    },
  });
}

/** A started worker container's address on the worker network (null when it has none). */
export const workerIpAddress = (
  config: Pick<Config, 'WORKER_NETWORK' | 'WORKER_EGRESS_ALLOW'>,
  container: { NetworkSettings?: { Networks?: Record<string, { IPAddress?: string } | undefined> } },
): string | null => container.NetworkSettings?.Networks?.[workerNetworkName(config)]?.IPAddress || null;
