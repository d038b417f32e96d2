/**
 * One image build per content hash (id `image-build-<hash>`): every worker that needs the image
 * while it is built joins this workflow instead of starting a build of its own.
 */
import type { ActivityOptions } from '@temporalio/common';
import { proxyActivities } from '@temporalio/workflow';
import type { ImageActivities } from '../activities/images';
import type { ImageBuildInput, ImageBuildResult } from './messages';

/** A docker build may take half an hour. */
export const imageBuildTimeouts = { startToCloseTimeout: '30 minutes', heartbeatTimeout: '2 minutes' } satisfies ActivityOptions;

export async function imageBuild(input: ImageBuildInput): Promise<ImageBuildResult> {
  const { buildImage } = proxyActivities<ImageActivities>({
    taskQueue: input.dockerTaskQueue,
    ...imageBuildTimeouts,
    retry: { initialInterval: '5s', maximumAttempts: 3, nonRetryableErrorTypes: ['BUILD_FAILED'] },
    summary: `docker build ${input.tag}`,
  });
  const { tag, seconds } = await buildImage({ hash: input.hash, agentType: input.agentType, modules: input.modules });
  return { tag, seconds, agentType: input.agentType, modules: input.modules };
}
