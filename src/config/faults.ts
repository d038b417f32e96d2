/**
 * Fault-injection points for the reliability suite (`npm run reliability`, test/reliability/).
 * Inert unless the environment variable WM_FAULT_INJECT names a point (`<point>[:<command>]`):
 * then the process kills itself with SIGKILL when it reaches that point (while serving a command
 * of that name, when one is given), as a crash at that exact moment would. A manager
 * restarted without the variable carries on from there. Never set it in production.
 *
 * The named points:
 * - `during-image-build`     the docker build has started (activities/images.ts buildImage)
 * - `after-container-create` the container exists but is not started (activities/docker.ts createContainer)
 * - `during-write-instructions` just before CLAUDE.md / AGENTS.md is uploaded (activities/docker.ts writeFile,
 *                             run alongside the start by launchContainer)
 * - `during-delete`          the container is stopped but not yet removed (src/host/workerRemoval.ts)
 * - `during-suspend`         a suspending worker's container is killed, its workspace not yet copied
 *                             (a warm-pool one) nor the container removed (src/host/workerRemoval.ts)
 * - `during-resume`          a resuming worker's container is created on its volume, not started
 *                             (activities/docker.ts resumeContainer)
 * - `adapter-after-read`     a valid command entry is read and parsed, nothing done yet (src/manager/commandAdapter.ts;
 *                             test/integration/adapterCrash.test.ts)
 * - `adapter-before-reply`   the command ran, its reply and acknowledgement are not written (src/manager/commandAdapter.ts)
 */
export const FAULT_POINTS = [
  'during-image-build',
  'after-container-create',
  'during-write-instructions',
  'during-delete',
  'during-suspend',
  'during-resume',
  'adapter-after-read',
  'adapter-before-reply',
] as const;
export type FaultPoint = (typeof FAULT_POINTS)[number];

export function faultPoint(name: FaultPoint, command?: string): void {
  const spec = process.env.WM_FAULT_INJECT;
  if (!spec) return;
  const [at, only] = spec.split(':');
  if (at !== name || (only && only !== command)) return;
  process.stderr.write(`worker-manager: fault injection: SIGKILL at ${name}\n`);
  process.kill(process.pid, 'SIGKILL');
}
