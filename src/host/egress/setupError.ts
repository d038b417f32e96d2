/** What stops the egress allow-list from being set up; the manager does not start without it. */
export class EgressSetupError extends Error {
  constructor(message: string) {
    super(`egress allow-list (WORKER_EGRESS_ALLOW): ${message}`);
    this.name = 'EgressSetupError';
  }
}
