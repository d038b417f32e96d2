/**
 * `npm run reliability [-- --only container-kill,docker,manager-kill,hibernation,temporal,redis]`: the
 * fault-injection suite. Brings up a private Temporal dev server and Redis (the shared stack is
 * never disturbed), runs the scenarios, prints the table, writes bench/reliability.md and .json,
 * removes everything it started and exits non-zero on any failure, lost command or leak.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { DefaultLogger, makeTelemetryFilterString, Runtime } from '@temporalio/worker';
import { Run, runScenarios, SCENARIOS, type ScenarioName, type ScenarioResult } from './scenarios';
import { ROOT } from './services';

export function table(results: ScenarioResult[]): string {
  const head = '| scenario | outcome | faults injected | commands sent during faults | commands lost | leaks found | seconds | notes |';
  const rows = results.map(
    (r) =>
      `| ${r.scenario} | ${r.outcome === 'pass' ? 'pass' : '**FAIL**'} | ${r.faults} | ${r.sentDuringFaults} | ${r.lost} | ${r.leaks} | ${r.seconds} | ${r.detail.replace(/\|/g, '/').replace(/\n/g, ' ').slice(0, 400)} |`,
  );
  const sum = (k: 'faults' | 'sentDuringFaults' | 'lost' | 'leaks') => results.reduce((s, r) => s + Math.max(0, r[k]), 0);
  const total = `| **total: ${results.length} scenarios, ${results.filter((r) => r.outcome === 'pass').length} passed** | | ${sum('faults')} | ${sum('sentDuringFaults')} | ${sum('lost')} | ${sum('leaks')} | ${results.reduce((s, r) => s + r.seconds, 0)} | |`;
  return [head, '|---|---|---|---|---|---|---|---|', ...rows, total].join('\n');
}

async function main(): Promise<void> {
  const i = process.argv.indexOf('--only');
  const which = (i >= 0 ? (process.argv[i + 1] ?? '').split(',') : [...SCENARIOS]) as ScenarioName[];
  const unknown = which.filter((w) => !(SCENARIOS as readonly string[]).includes(w));
  if (unknown.length) {
    process.stderr.write(`unknown scenario(s) ${unknown.join(', ')}; known: ${SCENARIOS.join(', ')}\n`);
    process.exit(2);
  }
  Runtime.install({
    logger: new DefaultLogger('ERROR'),
    telemetryOptions: { logging: { filter: makeTelemetryFilterString({ core: 'ERROR' }) } },
  });
  // Promises kept for later checks may reject before they are awaited: that is a result, not a crash.
  process.on('unhandledRejection', () => undefined);
  const run = new Run();
  let results: ScenarioResult[] = [];
  let fatal: unknown;
  const interrupted = () => void run.cleanup().finally(() => process.exit(130));
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    // The bundle `npm run build` made (scripts/reliability.sh builds first): no second webpack run.
    await run.start({ bundlePath: path.join(ROOT, 'dist', 'workflows.bundle.js') });
    results = await runScenarios(run, which);
  } catch (err) {
    fatal = err;
    process.stderr.write(`reliability: ${(err as Error).stack ?? String(err)}\n`);
  } finally {
    run.log('cleaning up (private servers, containers, images)');
    await run.cleanup().catch((err) => process.stderr.write(`cleanup: ${(err as Error).message}\n`));
  }
  const md = `# Reliability run\n\n${new Date().toISOString()} · \`npm run reliability${i >= 0 ? ` -- --only ${which.join(',')}` : ''}\` · run ${run.id}\n\n${table(results)}\n`;
  const out = path.join(ROOT, 'bench');
  mkdirSync(out, { recursive: true });
  writeFileSync(path.join(out, 'reliability.md'), md);
  writeFileSync(
    path.join(out, 'reliability.json'),
    JSON.stringify({ date: new Date().toISOString(), run: run.id, scenarios: results }, null, 2) + '\n',
  );
  process.stdout.write(`\n${table(results)}\n\nwritten to bench/reliability.md and bench/reliability.json\n`);
  const bad = fatal !== undefined || results.length === 0 || results.some((r) => r.outcome !== 'pass' || r.lost !== 0 || r.leaks !== 0);
  process.exit(bad ? 1 : 0);
}

void main();
