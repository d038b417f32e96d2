/**
 * A worker's named volume (`worker-{id}-workspace`): its /workspace, holding the agent's session
 * files too (the wrapper links ~/.claude/projects and ~/.factory/sessions into
 * /workspace/.agent-sessions, src/wrapper/agentHome.ts). Mounted at /workspace by every container
 * made for a worker that may be suspended, so a SUSPENDED worker (its container removed) resumes
 * in a new container with its files and its conversation. A warm-pool container was made before
 * it had an owner, so without the volume: its /workspace is copied into the volume when its worker
 * is suspended (copyWorkspaceToVolume), and its resumed container mounts the volume like any other.
 * Labelled like the containers (managed, task queue, worker id): the orphan reaper and the leak
 * audit find them. Idempotent throughout.
 */
import type Docker from 'dockerode';
import type { Config } from '../config/config';
import { volumeNameFor } from '../shared/ids';
import { WORKSPACE_DIR } from '../shared/instructions';
import { statusCode } from './dockerStatus';
import { LABELS } from './labels';

/** Creates the worker's volume, or finds it (creating a volume that exists is a no-op in Docker). */
export async function ensureWorkerVolume(docker: Docker, config: Pick<Config, 'TEMPORAL_TASK_QUEUE'>, workerId: string): Promise<string> {
  const name = volumeNameFor(workerId);
  await docker.createVolume({
    Name: name,
    Labels: { [LABELS.managed]: 'true', [LABELS.taskQueue]: config.TEMPORAL_TASK_QUEUE, [LABELS.workerId]: workerId },
  });
  return name;
}

/** Whether the worker's volume exists. */
export async function workerVolumeExists(docker: Docker, workerId: string): Promise<boolean> {
  try {
    await docker.getVolume(volumeNameFor(workerId)).inspect();
    return true;
  } catch (err) {
    if (statusCode(err) === 404) return false;
    throw err;
  }
}

/** Removes the worker's volume; false when there was none. A volume still in use throws (retried). */
export async function removeWorkerVolume(docker: Docker, workerId: string): Promise<boolean> {
  try {
    await docker.getVolume(volumeNameFor(workerId)).remove();
    return true;
  } catch (err) {
    if (statusCode(err) === 404) return false;
    throw err;
  }
}

/** This deployment's worker volumes: [volume name, worker id]. */
export async function listWorkerVolumes(docker: Docker, taskQueue: string): Promise<{ name: string; workerId: string }[]> {
  const { Volumes } = await docker.listVolumes({
    filters: { label: [`${LABELS.managed}=true`, `${LABELS.taskQueue}=${taskQueue}`] },
  });
  return (Volumes ?? [])
    .map((v) => ({ name: v.Name, workerId: v.Labels?.[LABELS.workerId] ?? '' }))
    .filter((v) => v.workerId !== '' && v.name === volumeNameFor(v.workerId));
}

/** The container options that mount the worker's volume at /workspace. */
export const workspaceMount = (volume: string): Docker.MountConfig => [
  { Type: 'volume', Source: volume, Target: WORKSPACE_DIR, ReadOnly: false },
];

/** Whether a container has a volume mounted at /workspace (a warm-pool one has not). */
export const mountsWorkspaceVolume = (info: Pick<Docker.ContainerInspectInfo, 'Mounts'>, volume: string): boolean =>
  (info.Mounts ?? []).some((m) => m.Destination === WORKSPACE_DIR && m.Name === volume);

/**
 * Copies a stopped container's /workspace into the worker's volume, owners and modes kept: the
 * archive goes through a helper container (created, never started) that mounts the volume.
 */
export async function copyWorkspaceToVolume(
  docker: Docker,
  config: Pick<Config, 'TEMPORAL_TASK_QUEUE'>,
  input: { workerId: string; containerId: string; image: string },
): Promise<void> {
  const volume = await ensureWorkerVolume(docker, config, input.workerId);
  const name = `${volumeNameFor(input.workerId)}-copy`;
  await docker
    .getContainer(name)
    .remove({ force: true })
    .catch((err) => {
      if (statusCode(err) !== 404) throw err; // an earlier attempt's helper
    });
  const helper = await docker.createContainer({
    name,
    Image: input.image,
    Entrypoint: ['true'],
    Labels: { [LABELS.managed]: 'true', [LABELS.taskQueue]: config.TEMPORAL_TASK_QUEUE },
    HostConfig: { NetworkMode: 'none', Mounts: workspaceMount(volume) },
  });
  try {
    const archive = await docker.getContainer(input.containerId).getArchive({ path: WORKSPACE_DIR });
    await helper.putArchive(archive, { path: '/' });
  } finally {
    await helper.remove({ force: true }).catch(() => undefined);
  }
}
