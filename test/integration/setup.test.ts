/**
 * What a user meets when starting things: the manager refuses bad configuration with a message
 * naming each bad variable, and temporal-dev.yml is a valid Compose file describing the dev stack.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { ROOT } from '../helpers/stack';

const run = promisify(execFile);

test('the manager exits 2 on bad configuration and names every bad variable', async () => {
  const err = await run(process.execPath, [path.join(ROOT, 'dist/src/manager.js')], {
    env: { ...process.env, MAX_CONCURRENT_WORKERS: 'lots', WORKER_MEMORY_LIMIT: '12 parsecs', REDIS_URL: 'http://x' },
    timeout: 30_000,
  }).catch((e: { code: number; stderr: string }) => e);
  expect((err as { code: number }).code).toBe(2);
  const stderr = (err as { stderr: string }).stderr;
  for (const name of ['MAX_CONCURRENT_WORKERS', 'WORKER_MEMORY_LIMIT', 'REDIS_URL']) expect(stderr).toContain(name);
  expect(stderr).toContain('got "lots"');
});

test('temporal-dev.yml describes Temporal (UI and search attributes) and Redis, and docker-compose accepts it', async () => {
  const { stdout } = await run('docker-compose', ['-f', path.join(ROOT, 'temporal-dev.yml'), 'config'], { timeout: 60_000 });
  expect(stdout).toMatch(/^\s+temporal:/m);
  expect(stdout).toMatch(/^\s+redis:/m);
  for (const attr of ['WorkerId=Keyword', 'AgentType=Keyword', 'WorkerStatus=Keyword']) expect(stdout).toContain(attr);
  expect(stdout).toContain('8233');
});
