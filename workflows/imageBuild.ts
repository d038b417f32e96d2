/**
 * One image build per content hash (id `image-build-<hash>`): every worker that needs the image
 * while it is built joins this workflow instead of starting a build of its own.
 */
import { proxyActivities } from '@temporalio/workflow';
import type { ImageActivities } from '../activities/images';
import type { AgentType, Module } from '../src/contract/schemas';

export interface ImageBuildInput {
  hash: string;
  tag: string;
  agentType: AgentType;
  modules: Module[];
  /** The task queue of the Docker host to build on. */
  dockerTaskQueue: string;
}

export interface ImageBuildResult {
  tag: string;
  /** Wall time of the docker build; 0 when an earlier attempt had already built it. */
  seconds: number;
  agentType: AgentType;
  modules: Module[];
}

export async function imageBuild(input: ImageBuildInput): Promise<ImageBuildResult> {
  const { buildImage } = proxyActivities<ImageActivities>({
    taskQueue: input.dockerTaskQueue,
    startToCloseTimeout: '30 minutes',
    heartbeatTimeout: '2 minutes',
    retry: { initialInterval: '5s', maximumAttempts: 3, nonRetryableErrorTypes: ['BUILD_FAILED'] },
    summary: `docker build ${input.tag}`,
  });
  const { tag, seconds } = await buildImage({ hash: input.hash, agentType: input.agentType, modules: input.modules });
  return { tag, seconds, agentType: input.agentType, modules: input.modules };
}
