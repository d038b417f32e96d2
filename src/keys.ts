/** Redis keys of the wire contract, in one place (kept free of imports: the wrapper bundles it). */
export const keys = {
  commands: 'worker:commands',
  deadLetters: 'worker:commands:dead',
  lifecycle: 'worker:lifecycle',
  images: 'worker:images',
  status: (id: string) => `worker:status:${id}`,
  statusPattern: 'worker:status:*',
  input: (id: string) => `worker:${id}:input`,
  output: (id: string) => `worker:${id}:output`,
  heartbeat: (id: string) => `worker:heartbeat:${id}`,
} as const;

export const CONSUMER_GROUP = 'worker-manager';
