/**
 * Worker images: choosing one, building it once per content hash, and the inventory the image GC
 * works from. An image's tag is `worker:<hash>`, a hash of the generated Dockerfile, every file in
 * the build context and the base image's id, so an existing tag means there is nothing to build.
 */
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { Context } from '@temporalio/activity';
import { WorkflowFailedError, type Client } from '@temporalio/client';
import { ApplicationFailure, WorkflowIdConflictPolicy, WorkflowIdReusePolicy } from '@temporalio/common';
import type Docker from 'dockerode';
import type Redis from 'ioredis';
import { pack } from 'tar-stream';
import { dockerTaskQueue, type Config } from '../src/config/config';
import type { AgentType, Module } from '../src/contract/schemas';
import { EXTRA_CA_CONTEXT_FILE, imageModules, renderDockerfile } from '../src/host/dockerfile';
import { faultPoint } from '../src/config/faults';
import { keys } from '../src/contract/keys';
import type { ManagedImage } from '../workflows/gcPlan';
import type { ActivityMetrics } from '../src/manager/temporalWorkers';
import type { ImageBuildWorkflow } from '../workflows/messages';
import { statusCode } from '../src/host/dockerStatus';
import { LABELS } from '../src/host/labels';
import { poolKeys } from '../src/host/warmPool';
import { imageBuildWorkflowId, isWarmPoolContainer } from '../src/shared/ids';

export interface ImageDeps {
  config: Config;
  docker: Docker;
  redis: Redis;
  client: Client;
  metrics?: ActivityMetrics;
}

export interface ImageRequest {
  agentType: AgentType;
  modules: Module[];
}

export interface ResolvedImage {
  tag: string;
  hash: string;
  built: boolean;
}

interface BuildContext {
  files: { name: string; content: Buffer }[];
  hash: string;
  tag: string;
}

const BUILD_LOG_TAIL = 25;

function buildFailed(message: string): ApplicationFailure {
  return ApplicationFailure.create({ type: 'BUILD_FAILED', nonRetryable: true, message });
}

async function baseImageId(docker: Docker, baseImage: string): Promise<string> {
  try {
    return (await docker.getImage(baseImage).inspect()).Id;
  } catch (err) {
    if (statusCode(err) === 404) {
      throw buildFailed(`base image ${baseImage} is not present on the Docker host; run "npm run stack" (it makes it locally) or pull it`);
    }
    throw err;
  }
}

/** Context files by path, kept while their size and mtime stay the same (read once, not per create). */
const fileCache = new Map<string, { stamp: string; content: Buffer }>();
/** Context hashes by what they were computed from (Dockerfile, file stamps, base image id). */
const hashCache = new Map<string, string>();

async function readContextFile(file: string, what: string, hint: string): Promise<{ content: Buffer; stamp: string }> {
  try {
    const st = await stat(file);
    const stamp = `${file}:${st.size}:${st.mtimeMs}`;
    const hit = fileCache.get(file);
    if (hit?.stamp === stamp) return hit;
    const entry = { stamp, content: await readFile(file) };
    fileCache.set(file, entry);
    return entry;
  } catch {
    throw buildFailed(`${what} is missing at ${file}; ${hint}`);
  }
}

async function buildContext(deps: Pick<ImageDeps, 'config' | 'docker'>, req: ImageRequest): Promise<BuildContext> {
  const { config } = deps;
  const dockerfile = renderDockerfile({
    baseImage: config.BASE_IMAGE,
    agentType: req.agentType,
    modules: req.modules,
    extraCa: config.EXTRA_CA_CERTS !== undefined,
  });
  const wrapper = await readContextFile(config.WRAPPER_BUNDLE, 'the wrapper bundle', 'run "npm run build"');
  const files = [
    { name: 'Dockerfile', content: Buffer.from(dockerfile, 'utf8') },
    { name: 'wrapper.js', content: wrapper.content },
  ];
  const stamps = [wrapper.stamp];
  if (config.EXTRA_CA_CERTS) {
    const ca = await readContextFile(config.EXTRA_CA_CERTS, 'EXTRA_CA_CERTS', 'fix the setting');
    files.push({ name: EXTRA_CA_CONTEXT_FILE, content: ca.content });
    stamps.push(ca.stamp);
  }
  const base = await baseImageId(deps.docker, config.BASE_IMAGE);
  const memoKey = JSON.stringify([base, dockerfile, stamps]);
  let hash = hashCache.get(memoKey);
  if (!hash) {
    const h = createHash('sha256');
    h.update(`base:${base}\n`);
    for (const f of files) h.update(`file:${f.name}:${f.content.length}\n`).update(f.content);
    hash = h.digest('hex').slice(0, 16);
    if (hashCache.size > 256) hashCache.clear();
    hashCache.set(memoKey, hash);
  }
  return { files, hash, tag: `worker:${hash}` };
}

/** The tag an agent type and modules resolve to right now, without building anything. */
export async function imageTagFor(deps: Pick<ImageDeps, 'config' | 'docker'>, req: ImageRequest): Promise<{ tag: string; hash: string }> {
  const { tag, hash } = await buildContext(deps, req);
  return { tag, hash };
}

function tarOf(files: { name: string; content: Buffer }[]): NodeJS.ReadableStream {
  const p = pack();
  for (const f of files) p.entry({ name: f.name, mode: 0o644 }, f.content);
  p.finalize();
  return p as unknown as NodeJS.ReadableStream;
}

async function imageExists(docker: Docker, tag: string): Promise<boolean> {
  try {
    await docker.getImage(tag).inspect();
    return true;
  } catch (err) {
    if (statusCode(err) === 404) return false;
    throw err;
  }
}

interface BuildEvent {
  stream?: string;
  status?: string;
  error?: string;
  errorDetail?: { message?: string };
}

/** The innermost message of a failed build workflow: the build log tail the activity reported. */
function buildFailureMessage(err: WorkflowFailedError): string {
  let cause: Error | undefined = err.cause;
  while (cause && (cause as { cause?: Error }).cause) cause = (cause as { cause?: Error }).cause;
  return cause?.message ?? err.message;
}

export function createImageActivities(deps: ImageDeps) {
  const { config, docker, redis, client } = deps;

  /** [worker id, image tag] of the SUSPENDED workers in Redis. */
  async function suspendedWorkerImages(): Promise<[string, string][]> {
    const found: [string, string][] = [];
    let cursor = '0';
    do {
      const [next, statusKeys] = await redis.scan(cursor, 'MATCH', keys.statusPattern, 'COUNT', 500);
      cursor = next;
      for (const key of statusKeys) {
        const [status, image] = await redis.hmget(key, 'status', 'image');
        if (status === 'SUSPENDED' && image) found.push([key.slice('worker:status:'.length), image]);
      }
    } while (cursor !== '0');
    return found;
  }

  return {
    /**
     * Returns the image for an agent type and modules. A missing image is built exactly once per
     * hash, however many workers ask at once: they all join the build workflow `image-build-<hash>`.
     */
    async ensureImage(req: ImageRequest): Promise<ResolvedImage> {
      const ctx = await buildContext(deps, req);
      let built = false;
      if (!(await imageExists(docker, ctx.tag))) {
        const activity = Context.current();
        const handle = await client.workflow.start<ImageBuildWorkflow>('imageBuild', {
          workflowId: imageBuildWorkflowId(ctx.hash),
          taskQueue: config.TEMPORAL_TASK_QUEUE,
          args: [
            {
              hash: ctx.hash,
              tag: ctx.tag,
              agentType: req.agentType,
              modules: imageModules(req.modules),
              dockerTaskQueue: dockerTaskQueue(config),
            },
          ],
          // Join a build in progress; after a finished one (the image may since have been removed) start anew.
          workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
          workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
          staticSummary: `build ${ctx.tag} (${req.agentType}${req.modules.length ? ` + ${imageModules(req.modules).join(', ')}` : ''})`,
        });
        const beat = setInterval(() => activity.heartbeat({ waiting_for: handle.workflowId }), 5_000);
        try {
          // Stop waiting if this worker is deleted; the build goes on for whoever else waits.
          await Promise.race([handle.result(), activity.cancelled]);
        } catch (err) {
          if (err instanceof WorkflowFailedError) throw buildFailed(buildFailureMessage(err));
          throw err;
        } finally {
          clearInterval(beat);
        }
        built = true;
      }
      // Last use feeds the image GC's LRU order.
      await redis.zadd(keys.images, Date.now(), ctx.tag);
      return { tag: ctx.tag, hash: ctx.hash, built };
    },

    /** The build itself (run by the imageBuild workflow): heartbeats its progress, can be cancelled. */
    async buildImage(input: { hash: string; agentType: AgentType; modules: Module[] }): Promise<{ tag: string; seconds: number }> {
      const activity = Context.current();
      const ctx = await buildContext(deps, { agentType: input.agentType, modules: input.modules });
      if (ctx.hash !== input.hash) {
        throw buildFailed(`the build context changed while the build of ${input.hash} waited (now ${ctx.hash}); create the worker again`);
      }
      if (await imageExists(docker, ctx.tag)) return { tag: ctx.tag, seconds: 0 }; // an earlier attempt finished
      const started = Date.now();
      const tail: string[] = [];
      const remember = (text: string) => {
        for (const l of text.split('\n')) {
          if (!l.trim()) continue;
          tail.push(l);
          if (tail.length > BUILD_LOG_TAIL) tail.shift();
        }
      };
      activity.log.info('building worker image', { tag: ctx.tag, agentType: input.agentType, modules: input.modules });
      const stream = await docker.buildImage(tarOf(ctx.files), {
        t: ctx.tag,
        labels: { [LABELS.managed]: 'true', [LABELS.imageHash]: ctx.hash, [LABELS.agentType]: input.agentType },
        rm: true,
        forcerm: true,
        abortSignal: activity.cancellationSignal,
      } as Docker.ImageBuildOptions);
      faultPoint('during-image-build');
      const failure = await new Promise<string | undefined>((resolve) => {
        let error: string | undefined;
        docker.modem.followProgress(
          stream,
          (err: Error | null) => resolve(err ? err.message : error),
          (evt: BuildEvent) => {
            if (evt.stream) remember(evt.stream);
            if (evt.status) remember(evt.status);
            if (evt.error) {
              error = evt.errorDetail?.message ?? evt.error;
              remember(error);
            }
            activity.heartbeat({ tag: ctx.tag, last: tail[tail.length - 1] ?? '' });
          },
        );
      });
      if (activity.cancellationSignal.aborted) throw new Error('image build cancelled');
      deps.metrics?.imageBuilt(failure ? 'failed' : 'ok');
      if (failure) {
        throw buildFailed(`building ${ctx.tag} failed: ${failure}\n--- last lines of the build log ---\n${tail.join('\n')}`);
      }
      return { tag: ctx.tag, seconds: Math.round((Date.now() - started) / 100) / 10 };
    },

    /** Managed images with their size, last use (Redis) and whether any container (or SUSPENDED worker) uses them. */
    async listManagedImages(): Promise<ManagedImage[]> {
      const images = await docker.listImages({ filters: { label: [`${LABELS.managed}=true`] } });
      const containers = await docker.listContainers({ all: true });
      const used = new Map<string, string[]>();
      // Unclaimed warm-pool containers are a cache: the GC removes them with their image.
      for (const c of containers.filter((c) => !(c.Labels[LABELS.pool] && isWarmPoolContainer(c.Names[0] ?? ''))))
        used.set(c.ImageID, [...(used.get(c.ImageID) ?? []), c.Names[0]?.replace(/^\//, '') ?? c.Id]);
      // A SUSPENDED worker has no container, but its resume needs its image.
      for (const [workerId, tag] of await suspendedWorkerImages()) {
        const image = images.find((i) => i.RepoTags?.includes(tag));
        if (image) used.set(image.Id, [...(used.get(image.Id) ?? []), `worker-${workerId} (SUSPENDED)`]);
      }
      const tags = images.flatMap((i) => i.RepoTags ?? []).filter((t) => t !== '<none>:<none>');
      const scores = tags.length ? await redis.zmscore(keys.images, ...tags) : [];
      const lastUse = new Map(tags.map((t, i) => [t, scores[i] ? Number(scores[i]) : undefined]));
      return images.map((i) => {
        const own = (i.RepoTags ?? []).filter((t) => t !== '<none>:<none>');
        const uses = own.map((t) => lastUse.get(t)).filter((v): v is number => v !== undefined);
        return {
          id: i.Id,
          tags: own,
          sizeBytes: i.Size,
          createdMs: i.Created * 1000,
          lastUsedMs: uses.length ? Math.max(...uses) : undefined,
          usedBy: used.get(i.Id) ?? [],
        };
      });
    },

    /**
     * Removes images, never one a container uses: Docker refuses (409) and the image is kept with
     * that reason. Removed images leave `worker:images` too. Returns what was removed and kept.
     */
    async removeImages(input: {
      images: { id: string; tags: string[] }[];
    }): Promise<{ removed: string[]; kept: { id: string; reason: string }[] }> {
      const removed: string[] = [];
      const kept: { id: string; reason: string }[] = [];
      const pool = await docker.listContainers({ all: true, filters: { label: [`${LABELS.managed}=true`, LABELS.pool] } });
      for (const image of input.images) {
        try {
          // Warm containers of this image go first (of every pool on this engine: Docker would refuse).
          for (const c of pool.filter((c) => c.ImageID === image.id && isWarmPoolContainer(c.Names[0] ?? ''))) {
            await docker
              .getContainer(c.Id)
              .remove({ force: true, v: true })
              .catch((err) => {
                if (statusCode(err) !== 404) throw err;
              });
            await redis.del(...poolKeys(c.Names[0]!.slice(1)));
          }
          await docker.getImage(image.id).remove({ force: false, noprune: false });
          removed.push(image.id);
        } catch (err) {
          if (statusCode(err) === 404) removed.push(image.id);
          else if (statusCode(err) === 409) kept.push({ id: image.id, reason: 'in use by a container (refused by Docker)' });
          else throw err;
        }
      }
      const gone = input.images.filter((i) => removed.includes(i.id)).flatMap((i) => i.tags);
      if (gone.length) await redis.zrem(keys.images, ...gone);
      deps.metrics?.imagesRemoved(removed.length);
      return { removed, kept };
    },

    /** Frees Docker's build cache (layers no image needs any more). */
    async pruneBuildCache(): Promise<{ bytesFreed: number }> {
      const res = (await docker.pruneBuilder()) as { SpaceReclaimed?: number };
      return { bytesFreed: res.SpaceReclaimed ?? 0 };
    },
  };
}

export type ImageActivities = ReturnType<typeof createImageActivities>;
