#!/usr/bin/env node
/**
 * The manager process: the configuration from the environment (src/config/config.ts), the manager built
 * by src/manager/createManager.ts, run until SIGINT or SIGTERM. The composition root: the one file
 * in src/ that imports activities/, to hand their factory to createManager (eslint.config.js).
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { createActivities } from '../activities';
import { ConfigError, loadConfig, type Config } from './config/config';
import { createManager } from './manager/createManager';
import { createLog } from './manager/log';

/** dist/workflows.bundle.js, made by `npm run build` (scripts/build-workflows.js), when present. */
function prebuiltWorkflowBundle(): string | undefined {
  const p = path.join(__dirname, '..', 'workflows.bundle.js');
  return existsSync(p) ? p : undefined;
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`worker-manager: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLog('manager', config.LOG_LEVEL);
  const manager = await createManager(config, {
    activities: createActivities,
    workflowBundlePath: process.env.WORKFLOW_BUNDLE ?? prebuiltWorkflowBundle(),
  });

  let shuttingDown = false;
  const shutdown = (signal: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info(
      `${signal}: shutting down (in-flight commands finish first; waiting tasks stay pending and are answered after the next start)`,
    );
    void manager.stop();
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));

  await manager.start();
  process.stderr.write(
    `\nworker-manager is up. Temporal UI: ${config.TEMPORAL_UI_URL}/namespaces/${config.TEMPORAL_NAMESPACE}/workflows\n\n`,
  );
  await manager.run();
}

main().catch((err) => {
  process.stderr.write(`worker-manager: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
