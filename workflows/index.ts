// The workflow bundle's entry: every workflow the manager's Temporal worker runs.
export { workerLifecycle } from './workerLifecycle';
export { capacitySemaphore } from './capacitySemaphore';
export { imageBuild } from './imageBuild';
export { imageGc } from './imageGc';
