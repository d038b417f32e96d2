/**
 * `npm run reliability [-- --only container-kill,docker,manager-kill,hibernation,temporal,redis]`: the
 * fault-injection suite. Brings up a private Temporal dev server and Redis (the shared stack is
 * never disturbed), runs the scenarios, prints the table, writes bench/reliability.md and .json,
 * removes everything it started and exits non-zero on any failure, lost command or leak.
 * `npm run reliability -- --soak [--seed N] [--commands N] [--faults N] [--minutes N]` runs the chaos
 * soak (soak.ts) instead. Each kind of run replaces only its own part of the results files.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { DefaultLogger, makeTelemetryFilterString, Runtime } from '@temporalio/worker';
import { Run, runScenarios, SCENARIOS, type ScenarioName, type ScenarioResult } from './scenarios';
import { ROOT } from './services';
import { runSoak, soakTable, type SoakOptions, type SoakResult } from './soak';

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
};

/** A whole number option, or exit 2 naming it. */
function intArg(name: string, def: number, min: number): number {
  const v = arg(name);
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`${name} must be a whole number of at least ${min} (got ${JSON.stringify(v)})\n`);
    process.exit(2);
  }
  return n;
}

interface Results {
  date?: string;
  run?: string;
  command?: string;
  scenarios?: ScenarioResult[];
  soak?: { date: string; run: string; command: string; result: SoakResult };
}

/** bench/reliability.json and .md: the scenarios' table and the soak's, each from its latest run. */
function writeResults(update: Results): void {
  const out = path.join(ROOT, 'bench');
  mkdirSync(out, { recursive: true });
  const file = path.join(out, 'reliability.json');
  const before = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Results) : {};
  const all: Results = { ...before, ...update };
  writeFileSync(file, JSON.stringify(all, null, 2) + '\n');
  const parts = ['# Reliability run'];
  if (all.scenarios) parts.push(`${all.date} · \`${all.command ?? 'npm run reliability'}\` · run ${all.run}\n\n${table(all.scenarios)}`);
  if (all.soak)
    parts.push(`## Chaos soak\n\n${all.soak.date} · \`${all.soak.command}\` · run ${all.soak.run}\n\n${soakTable(all.soak.result)}`);
  writeFileSync(path.join(out, 'reliability.md'), parts.join('\n\n') + '\n');
}

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
  const soak = process.argv.includes('--soak');
  const i = process.argv.indexOf('--only');
  const which = (i >= 0 ? (process.argv[i + 1] ?? '').split(',') : [...SCENARIOS]) as ScenarioName[];
  const unknown = which.filter((w) => !(SCENARIOS as readonly string[]).includes(w));
  if (unknown.length) {
    process.stderr.write(`unknown scenario(s) ${unknown.join(', ')}; known: ${SCENARIOS.join(', ')}\n`);
    process.exit(2);
  }
  const soakOpts: SoakOptions = {
    seed: intArg('--seed', Math.floor(Math.random() * 2 ** 31), 0),
    commands: intArg('--commands', 1000, 1),
    faults: intArg('--faults', 20, 0),
    minutes: intArg('--minutes', 30, 1),
  };
  Runtime.install({
    logger: new DefaultLogger('ERROR'),
    telemetryOptions: { logging: { filter: makeTelemetryFilterString({ core: 'ERROR' }) } },
  });
  // Promises kept for later checks may reject before they are awaited: that is a result, not a crash.
  process.on('unhandledRejection', () => undefined);
  const run = new Run();
  let results: ScenarioResult[] = [];
  let soakResult: SoakResult | undefined;
  let fatal: unknown;
  const interrupted = () => void run.cleanup().finally(() => process.exit(130));
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    // The bundle `npm run build` made (scripts/reliability.sh builds first): no second webpack run.
    await run.start({ bundlePath: path.join(ROOT, 'dist', 'workflows.bundle.js') });
    if (soak) soakResult = await runSoak(run, soakOpts);
    else results = await runScenarios(run, which);
  } catch (err) {
    fatal = err;
    process.stderr.write(`reliability: ${(err as Error).stack ?? String(err)}\n`);
  } finally {
    run.log('cleaning up (private servers, containers, images)');
    await run.cleanup().catch((err) => process.stderr.write(`cleanup: ${(err as Error).message}\n`));
  }
  const date = new Date().toISOString();
  if (soak) {
    const command = `npm run reliability -- --soak --seed ${soakOpts.seed} --commands ${soakOpts.commands} --faults ${soakOpts.faults} --minutes ${soakOpts.minutes}`;
    if (soakResult) {
      writeResults({ soak: { date, run: run.id, command, result: soakResult } });
      process.stdout.write(
        `\n${soakTable(soakResult)}\n\nwritten to bench/reliability.md and bench/reliability.json\nreplay: ${command}\n`,
      );
    }
    process.exit(fatal !== undefined || soakResult?.outcome !== 'pass' ? 1 : 0);
  }
  writeResults({ date, run: run.id, command: `npm run reliability${i >= 0 ? ` -- --only ${which.join(',')}` : ''}`, scenarios: results });
  process.stdout.write(`\n${table(results)}\n\nwritten to bench/reliability.md and bench/reliability.json\n`);
  const bad = fatal !== undefined || results.length === 0 || results.some((r) => r.outcome !== 'pass' || r.lost !== 0 || r.leaks !== 0);
  process.exit(bad ? 1 : 0);
}

void main();
