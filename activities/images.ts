/**
 * Choosing and building worker images. An image's tag is a hash of everything that goes into it
 * (Dockerfile, every file in the build context, the base image's id, the agent type), so an
 * existing tag means there is nothing to build.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type Docker from 'dockerode';
import type Redis from 'ioredis';
import { pack } from 'tar-stream';
import type { Config } from '../src/config';
import type { AgentType } from '../src/contract';
import { keys } from '../src/keys';
import { LABELS } from './docker';

export interface ImageDeps {
  config: Config;
  docker: Docker;
  redis: Redis;
}

export interface ResolvedImage {
  tag: string;
  hash: string;
  built: boolean;
}

interface BuildContext {
  files: { name: string; content: Buffer }[];
  buildArgs: Record<string, string>;
  hash: string;
}

const BUILD_LOG_TAIL = 25;

async function baseImageId(docker: Docker, baseImage: string): Promise<string> {
  try {
    return (await docker.getImage(baseImage).inspect()).Id;
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) {
      throw ApplicationFailure.create({
        type: 'BUILD_FAILED',
        nonRetryable: true,
        message: `base image ${baseImage} is not present on the Docker host; run "npm run stack" (it makes it locally) or pull it`,
      });
    }
    throw err;
  }
}

async function buildContext(deps: ImageDeps, agentType: AgentType): Promise<BuildContext> {
  const dockerfile = path.join(deps.config.DOCKER_CONTEXT_DIR, 'worker-base', 'Dockerfile');
  const read = async (file: string, what: string) => {
    try {
      return await readFile(file);
    } catch {
      throw ApplicationFailure.create({
        type: 'BUILD_FAILED',
        nonRetryable: true,
        message: `${what} is missing at ${file}; run "npm run build"`,
      });
    }
  };
  const files = [
    { name: 'Dockerfile', content: await read(dockerfile, 'the worker-base Dockerfile') },
    { name: 'wrapper.js', content: await read(deps.config.WRAPPER_BUNDLE, 'the wrapper bundle') },
  ];
  const buildArgs = { AGENT_TYPE: agentType };
  const h = createHash('sha256');
  h.update(`base:${await baseImageId(deps.docker, deps.config.BASE_IMAGE)}\n`);
  for (const [k, v] of Object.entries(buildArgs)) h.update(`arg:${k}=${v}\n`);
  for (const f of files) h.update(`file:${f.name}:${f.content.length}\n`).update(f.content);
  return { files, buildArgs, hash: h.digest('hex').slice(0, 16) };
}

function tarOf(files: { name: string; content: Buffer }[]): NodeJS.ReadableStream {
  const p = pack();
  for (const f of files) p.entry({ name: f.name, mode: 0o644 }, f.content);
  p.finalize();
  return p as unknown as NodeJS.ReadableStream;
}

interface BuildEvent {
  stream?: string;
  status?: string;
  error?: string;
  errorDetail?: { message?: string };
}

export function createImageActivities(deps: ImageDeps) {
  const { docker, redis } = deps;

  async function build(tag: string, ctx: BuildContext, agentType: AgentType): Promise<void> {
    const activity = Context.current();
    const tail: string[] = [];
    const remember = (line: string) => {
      for (const l of line.split('\n')) {
        if (!l.trim()) continue;
        tail.push(l);
        if (tail.length > BUILD_LOG_TAIL) tail.shift();
      }
    };
    activity.log.info('building worker image', { tag, agentType });
    let stream: NodeJS.ReadableStream;
    try {
      stream = await docker.buildImage(tarOf(ctx.files), {
        t: tag,
        buildargs: ctx.buildArgs,
        labels: { [LABELS.managed]: 'true', [LABELS.imageHash]: ctx.hash, [LABELS.agentType]: agentType },
        rm: true,
        forcerm: true,
        abortSignal: activity.cancellationSignal,
      } as Docker.ImageBuildOptions);
    } catch (err) {
      throw new Error(`docker build could not start: ${(err as Error).message}`);
    }
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
          activity.heartbeat({ tag, last: tail[tail.length - 1] ?? '' });
        },
      );
    });
    if (activity.cancellationSignal.aborted) throw new Error('image build cancelled');
    if (failure) {
      throw ApplicationFailure.create({
        type: 'BUILD_FAILED',
        nonRetryable: true,
        message: `building ${tag} failed: ${failure}\n--- last lines of the build log ---\n${tail.join('\n')}`,
      });
    }
  }

  return {
    /** Returns the image for an agent type, building it when its tag is not there yet. */
    async ensureImage(input: { agentType: AgentType }): Promise<ResolvedImage> {
      const ctx = await buildContext(deps, input.agentType);
      const tag = `worker:${ctx.hash}`;
      let built = false;
      try {
        await docker.getImage(tag).inspect();
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode !== 404) throw err;
        await build(tag, ctx, input.agentType);
        built = true;
      }
      // Last use feeds the image GC's LRU order.
      await redis.zadd(keys.images, Date.now(), tag);
      return { tag, hash: ctx.hash, built };
    },
  };
}

export type ImageActivities = ReturnType<typeof createImageActivities>;
