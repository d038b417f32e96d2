/**
 * STARTING -> RUNNING: the image and a capacity permit, then the container launched with its
 * instructions and its wrapper ready (a stop interrupts any of it), then the initial prompt.
 */
import { ApplicationFailure, CancellationScope, condition } from '@temporalio/workflow';
import { instructionsFileName, renderInstructions } from '../../src/shared/instructions';
import { now, type WorkerLife } from './life';
import { activitiesOn, placedOn } from './placement';

/** "812 B", "12 KiB": sizes in the activity summaries the Temporal UI shows. */
const sizeText = (s: string): string => {
  const bytes = new TextEncoder().encode(s).length;
  return bytes < 1024 ? `${bytes} B` : `${Math.round(bytes / 1024)} KiB`;
};

export async function start(life: WorkerLife): Promise<void> {
  const { spec, state } = life;
  life.startScope = new CancellationScope();
  const { warm } = await life.startScope.run(() => (life.cluster ? launchPlaced(life) : launch(life)));
  life.startScope = undefined;
  state.started_at = now();
  await life.transition(
    'RUNNING',
    'running',
    {
      container_id: state.container_id,
      image: state.image,
      ip_address: state.ip_address,
      started_at: state.started_at,
      last_activity_at: state.started_at,
    },
    { warm },
  );
  if (spec.initialPrompt !== undefined) {
    await life.acts.redis.pushInput.executeWithOptions({ summary: `send the initial prompt (${sizeText(spec.initialPrompt)})` }, [
      { workerId: spec.workerId, content: spec.initialPrompt, taskId: spec.taskId, timeoutS: spec.headless?.timeoutS },
    ]);
  }
}

/** Returns whether the container came from the warm pool. */
async function launch(life: WorkerLife): Promise<{ warm: boolean }> {
  const { spec, state } = life;
  const { images } = life.acts;
  // The image is resolved (or built) while the worker waits for a slot: a queued worker finds
  // its image ready when its permit comes.
  const imageResolved = images.ensureImage.executeWithOptions(
    { summary: `image for ${spec.agentType}${spec.modules.length ? ` + ${spec.modules.join(', ')}` : ''}` },
    [{ agentType: spec.agentType, modules: spec.modules }],
  );
  imageResolved.catch(() => undefined); // awaited below; a failure is reported there
  // A permit first: at the limit, creates wait here in arrival order (STARTING, queued).
  await Promise.all([
    life.transition('STARTING', 'starting', {
      worker_id: spec.workerId,
      agent_type: spec.agentType,
      task_id: spec.taskId ?? null,
      request_id: spec.requestId,
      created_at: state.created_at,
    }),
    life.requestPermit(`ask pool ${spec.capacityPool} for a worker slot`),
  ]);
  if (!(await condition(() => life.permitGranted, `${spec.creationTimeoutS} seconds`))) {
    throw ApplicationFailure.create({
      type: 'CAPACITY_TIMEOUT',
      message: `no worker slot freed within ${spec.creationTimeoutS} s (WORKER_CREATION_TIMEOUT_SECONDS)`,
    });
  }
  return launchWith(life, await imageResolved);
}

/** The container launched from the resolved image, on the worker's host. */
async function launchWith(life: WorkerLife, image: { tag: string; hash: string }): Promise<{ warm: boolean }> {
  const { spec, state } = life;
  const { launcher } = life.acts;
  state.image = image.tag;
  const instructionsSize = sizeText(renderInstructions(spec.instructions, spec.allowedCommands));
  const launched = await launcher.launchContainer.executeWithOptions(
    {
      summary: `launch ${spec.agentType} container (warm pool or new), write ${instructionsFileName(spec.agentType)} (${instructionsSize}), wait for the wrapper (≤ ${spec.readyTimeoutS} s)`,
    },
    [{ spec, image: { tag: image.tag, hash: image.hash } }],
  );
  state.container_id = launched.containerId;
  state.ip_address = launched.ipAddress;
  return { warm: launched.warm };
}

/**
 * A cluster's worker: the hosts ranked for its image (cached, then a warm container), a permit
 * from the cluster's semaphore that places it on a host, then the image and the container there.
 * When only one host can take it (pinned, or the cluster has one), its image is resolved there
 * while the worker waits, as on a single host; otherwise it is built on the chosen host.
 */
async function launchPlaced(life: WorkerLife): Promise<{ warm: boolean }> {
  const { spec, state } = life;
  const what = { agentType: spec.agentType, modules: spec.modules };
  const summary = `image for ${spec.agentType}${spec.modules.length ? ` + ${spec.modules.join(', ')}` : ''}`;
  const pinned = spec.cluster?.host;
  const { prefer, hosts } = pinned
    ? { prefer: [], hosts: [pinned] }
    : await life.acts.capacity.rankHosts.executeWithOptions({ summary: 'rank the Docker hosts for this worker' }, [what]);
  const early = hosts.length === 1 ? hosts[0] : undefined;
  const earlyImage = early !== undefined ? activitiesOn(spec, early).images.ensureImage.executeWithOptions({ summary }, [what]) : undefined;
  earlyImage?.catch(() => undefined); // awaited below when the worker lands there
  await Promise.all([
    life.transition('STARTING', 'starting', {
      worker_id: spec.workerId,
      agent_type: spec.agentType,
      task_id: spec.taskId ?? null,
      request_id: spec.requestId,
      created_at: state.created_at,
    }),
    life.requestPermit(
      pinned
        ? `ask the cluster for a worker slot on ${pinned}`
        : `ask the cluster for a worker slot${prefer.length ? ` (prefer ${prefer.join(', ')})` : ''}`,
      prefer,
    ),
  ]);
  if (!(await condition(() => life.permitGranted && life.host !== undefined, `${spec.creationTimeoutS} seconds`))) {
    throw ApplicationFailure.create({
      type: 'CAPACITY_TIMEOUT',
      message: `no worker slot freed within ${spec.creationTimeoutS} s (WORKER_CREATION_TIMEOUT_SECONDS)`,
    });
  }
  const host = life.host as string;
  await placedOn(life, host);
  const image =
    earlyImage && early === host
      ? await earlyImage
      : await life.acts.images.ensureImage.executeWithOptions({ summary: `${summary} on ${host}` }, [what]);
  return launchWith(life, image);
}
