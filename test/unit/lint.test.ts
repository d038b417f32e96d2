import { readdirSync } from 'node:fs';
import path from 'node:path';
import { ESLint, type Linter } from 'eslint';

/**
 * The lint config is the only guard that workflow code stays deterministic, so these cases pin what
 * it must refuse. Sources are linted from memory under a real file's name: the rules pick workflow
 * files by path, and type-aware rules need a file that tsconfig.json includes.
 */
const root = path.resolve(__dirname, '../..');
// ESLint would import() the config file, which jest refuses without --experimental-vm-modules;
// require() of the same (CommonJS) file tests the very config `npm run lint` loads.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const config = require('../../eslint.config.js') as Linter.Config[];
// With CI=true (as CI sets it) typescript-eslint assumes a single command-line run and builds its
// program from the files on disk once, so the in-memory sources below would be checked against the
// real files' types and come back clean. This suite lints text, so it turns that inference off.
const textLinting: Linter.Config = { languageOptions: { parserOptions: { disallowAutomaticSingleRunInference: true } } };
const eslint = new ESLint({ cwd: root, overrideConfigFile: true, overrideConfig: [...config, textLinting] });

async function problems(file: string, code: string): Promise<{ ruleId: string | null; line: number; message: string }[]> {
  const [result] = await eslint.lintText(code, { filePath: path.join(root, file) });
  return result!.messages.map(({ ruleId, line, message }) => ({ ruleId, line, message }));
}

describe('lint config', () => {
  it('refuses a Node built-in imported by a workflow file', async () => {
    const found = await problems(
      'workflows/imageBuild.ts',
      "import fs from 'node:fs';\n\nexport const exists = (p: string) => fs.existsSync(p);\n",
    );
    expect(found).toEqual([
      expect.objectContaining({
        ruleId: '@typescript-eslint/no-restricted-imports',
        line: 1,
        message: expect.stringContaining("'node:fs'"),
      }),
    ]);
  });

  it('refuses activities, the zod contract and I/O clients at run time in a workflow, but allows them as types', async () => {
    const code = [
      "import { createDockerActivities } from '../activities/docker';",
      "import { CreatePayload } from '../src/contract/schemas';",
      "import Redis from 'ioredis';",
      "import type { DockerActivities } from '../activities/docker';",
      "import type { WorkerSpec } from '../src/contract/schemas';",
      "import { ERROR_CODES } from '../src/shared/errorCodes';",
      "import { proxyActivities } from '@temporalio/workflow';",
      "import { planGc } from './gcPlan';",
      '',
      'export const all = [createDockerActivities, CreatePayload, Redis, ERROR_CODES, proxyActivities, planGc];',
      'export type Both = DockerActivities | WorkerSpec;',
      '',
    ].join('\n');
    const found = await problems('workflows/imageBuild.ts', code);
    expect(found.map((p) => [p.ruleId, p.line])).toEqual([
      ['@typescript-eslint/no-restricted-imports', 1],
      ['@typescript-eslint/no-restricted-imports', 2],
      ['@typescript-eslint/no-restricted-imports', 3],
    ]);
  });

  it('in a subfolder of workflows/, applies the same rule to paths written one folder further up, and allows workflow files above', async () => {
    const code = [
      "import { createDockerActivities } from '../../activities/docker';",
      "import { CreatePayload } from '../../src/contract/schemas';",
      "import { ERROR_CODES } from '../../src/shared/errorCodes';",
      "import { stopSignal } from '../messages';",
      "import { start } from './start';",
      '',
      'export const all = [createDockerActivities, CreatePayload, ERROR_CODES, stopSignal, start];',
      '',
    ].join('\n');
    const found = await problems('workflows/workerLifecycle/headlessWait.ts', code);
    expect(found.map((p) => [p.ruleId, p.line])).toEqual([
      ['@typescript-eslint/no-restricted-imports', 1],
      ['@typescript-eslint/no-restricted-imports', 2],
    ]);
  });

  it('refuses timers and process in a workflow file, and keeps Date.now and Math.random (the SDK makes them deterministic)', async () => {
    const code =
      'export function f(): number {\n  setTimeout(() => undefined, 10);\n  return Number(process.env.X) + Date.now() + Math.random();\n}\n';
    const found = await problems('workflows/imageBuild.ts', code);
    expect(found.map((p) => [p.ruleId, p.line, p.message.split(' ').slice(0, 4).join(' ')])).toEqual([
      ['no-restricted-globals', 2, "Unexpected use of 'setTimeout'."],
      ['no-restricted-globals', 3, "Unexpected use of 'process'."],
    ]);
  });

  it('refuses a floating promise in a workflow and in manager code', async () => {
    const workflow = "import { sleep } from '@temporalio/workflow';\n\nexport async function f(): Promise<void> {\n  sleep(1000);\n}\n";
    expect(await problems('workflows/imageBuild.ts', workflow)).toEqual([
      expect.objectContaining({ ruleId: '@typescript-eslint/no-floating-promises', line: 4 }),
    ]);
    const manager = 'async function write(): Promise<void> {}\n\nexport function f(): void {\n  write();\n  void write();\n}\n';
    expect(await problems('src/contract/keys.ts', manager)).toEqual([
      expect.objectContaining({ ruleId: '@typescript-eslint/no-floating-promises', line: 4 }),
    ]);
  });

  it('refuses activities/ anywhere in src/ (types too) but in the process entry, which hands them to createManager', async () => {
    const code =
      "import { createActivities } from '../../activities';\nimport type { DockerActivities } from '../../activities/docker';\n\nexport const all: unknown[] = [createActivities];\nexport type D = DockerActivities;\n";
    expect((await problems('src/manager/createManager.ts', code)).map((p) => [p.ruleId, p.line])).toEqual([
      ['@typescript-eslint/no-restricted-imports', 1],
      ['@typescript-eslint/no-restricted-imports', 2],
    ]);
    expect(await problems('src/manager.ts', code.replaceAll('../../activities', '../activities'))).toEqual([]);
  });

  it('passes the real workflow files', async () => {
    // Named one by one: ESLint walks a directory with import(), which jest refuses (see above).
    const files = readdirSync(path.join(root, 'workflows'), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
    expect(files).toContain('workerLifecycle.ts');
    const results = await eslint.lintFiles(files.map((f) => path.join('workflows', f)));
    expect(results.flatMap((r) => r.messages.map((m) => `${path.relative(root, r.filePath)}:${m.line} ${m.ruleId} ${m.message}`))).toEqual(
      [],
    );
  });
});
