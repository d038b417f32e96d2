/**
 * The workerLifecycle workflow's activities as recording fakes, a spec and a start, for the
 * workflow tests (test/workflow/): the SDK's way, the Worker gets other activity implementations.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Context } from '@temporalio/activity';
import type { Client, WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { historyToJSON } from '@temporalio/common/lib/proto-utils';
import type { DockerActivities } from '../../activities/docker';
import type { ImageActivities } from '../../activities/images';
import type { RedisActivities } from '../../activities/redis';
import type { StatusUpdate } from '../../src/contract/status';
import type { WorkerSpec } from '../../src/contract/schemas';
import type { workerLifecycle } from '../../workflows/workerLifecycle';
import { ROOT } from './stack';

export type Activities = DockerActivities & Pick<ImageActivities, 'ensureImage'> & RedisActivities;

export interface FakeOptions {
  buildFails?: boolean;
  hangInImageBuild?: boolean;
  /** What workerActivity reports: busy, and the time of the last input/output. */
  busy?: boolean;
  lastActivityMs?: () => number;
  /** resumeContainer fails as when the worker's image is gone. */
  resumeFails?: boolean;
}

export function fakeActivities(opts: FakeOptions = {}) {
  const calls: string[] = [];
  const statuses: StatusUpdate[] = [];
  const inputs: { content: string; taskId?: string }[] = [];
  const launches: { workerId: string; agentType: string; image: { tag: string; hash: string } }[] = [];
  const activities: Activities = {
    async ensureImage() {
      calls.push('ensureImage');
      if (opts.buildFails) {
        throw ApplicationFailure.create({
          type: 'BUILD_FAILED',
          nonRetryable: true,
          message: 'building worker:x failed: E: Unable to locate package nosuch',
        });
      }
      if (opts.hangInImageBuild) {
        for (;;) {
          Context.current().heartbeat();
          await Context.current().sleep(100); // rejects once the workflow cancels the activity
        }
      }
      return { tag: 'worker:fake', hash: 'fake', built: false };
    },
    async launchContainer(input) {
      calls.push('launchContainer');
      launches.push({ workerId: input.spec.workerId, agentType: input.spec.agentType, image: input.image });
      return { containerId: 'c0ffee', ipAddress: '172.18.0.9', warm: false };
    },
    async removeContainer() {
      calls.push('removeContainer');
      return { removed: true };
    },
    async pauseContainer() {
      calls.push('pauseContainer');
    },
    async unpauseContainer() {
      calls.push('unpauseContainer');
    },
    async suspendContainer() {
      calls.push('suspendContainer');
      return { suspended: true };
    },
    async resumeContainer() {
      calls.push('resumeContainer');
      if (opts.resumeFails) {
        throw ApplicationFailure.create({
          type: 'INTERNAL',
          nonRetryable: true,
          message: "resume failed: the worker's image worker:fake is gone",
          details: [{ reason: 'image_gone' }],
        });
      }
      return { containerId: 'c0ffee2', ipAddress: '172.18.0.10' };
    },
    async awaitTaskResult(input) {
      calls.push('awaitTaskResult');
      return { task_id: input.taskId, worker_id: input.workerId, status: 'ok' as const, result: 'fake result', duration_ms: 5 };
    },
    async workerActivity() {
      return { busy: opts.busy ?? false, lastActivityMs: opts.lastActivityMs?.() ?? Date.now() };
    },
    async recordStatus(update) {
      statuses.push(update);
    },
    async pushInput(input) {
      calls.push('pushInput');
      inputs.push(input);
    },
  };
  return { activities, calls, statuses, inputs, launches };
}

export function specFor(taskQueue: string, overrides: Partial<WorkerSpec> = {}): WorkerSpec {
  return {
    workerId: randomUUID(),
    requestId: `req-${randomUUID()}`,
    agentType: 'CLAUDE',
    instructions: '# Rules\nSay "hi" & `echo $(whoami)`\n',
    allowedCommands: ['git', 'npm test'],
    modules: ['GIT'],
    authMode: 'api_key',
    memoryBytes: 512 * 1024 ** 2,
    nanoCpus: 5e8,
    idleTimeoutS: 600,
    sessionTimeoutS: 1800,
    dockerTaskQueue: taskQueue,
    stopGraceSeconds: 1,
    readyTimeoutS: 10,
    capacityPool: taskQueue,
    creationTimeoutS: 30,
    holdPermitWhilePaused: true,
    ...overrides,
  };
}

export async function start(client: Client, taskQueue: string, spec: WorkerSpec) {
  return client.workflow.start<typeof workerLifecycle>('workerLifecycle', {
    taskQueue,
    workflowId: `worker-${spec.workerId}`,
    args: [spec],
  });
}

export const statusesOf = (s: StatusUpdate[]) => s.filter((u) => u.fields.status).map((u) => `${u.fields.status}:${u.event}`);

/**
 * The lifecycle release whose histories the tests record (README, "Upgrading the manager"): raise
 * it when a release changes the lifecycle's commands, so the recordings of the releases before
 * stay beside the new ones and keep being replayed.
 */
export const LIFECYCLE_RELEASE = 'v2';

/**
 * With RECORD_HISTORY=1, saves a finished workflow's history (of the run the handle names) to
 * test/fixtures/histories/<release>-<scenario>.json, which test/workflow/replay.test.ts replays.
 */
export async function recordHistory(handle: WorkflowHandle, scenario: string): Promise<void> {
  if (!process.env.RECORD_HISTORY) return;
  const dir = path.join(ROOT, 'test', 'fixtures', 'histories');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, `${LIFECYCLE_RELEASE}-${scenario}.json`), historyToJSON(await handle.fetchHistory()));
}
