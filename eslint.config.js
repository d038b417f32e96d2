// Lint catches what the type checker cannot: promises nobody awaits (everywhere), and workflow code
// that would break Temporal's deterministic replay. Layout and quotes are Prettier's job
// (.prettierrc), so no style rules here. CommonJS on purpose: test/unit/lint.test.ts require()s it
// (jest cannot import() an ES module without an experimental flag).
const { defineConfig } = require('eslint/config');
const js = require('@eslint/js');
const tseslint = require('typescript-eslint');

// The workflow bundle runs in Temporal's sandbox, and replays must take the same path as the first
// run. Workflow files may import at run time only the SDK's workflow-safe packages, each other
// (./x) and the src/shared/ modules listed here, which import nothing themselves but types. Anything else
// (Node built-ins, activities/, the contract's zod schemas, Docker and Redis clients) only as
// `import type`, which the compiler erases. Date.now() and Math.random() stay allowed: the SDK
// makes them deterministic inside a workflow.
const WORKFLOW_RUNTIME_IMPORTS = [
  '@temporalio/workflow',
  '@temporalio/common',
  '../src/shared/errorCodes',
  '../src/shared/ids',
  '../src/shared/instructions',
];
const escapeRegex = (s) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

// Paths are matched as written, so a file `depth` folders below workflows/ writes the list's paths
// with that many more `../`, and may import workflow files up to `depth` folders up (`../messages`).
const workflowImportsRule = (depth) => {
  const allowed = WORKFLOW_RUNTIME_IMPORTS.map((p) => (p.startsWith('../') ? '../'.repeat(depth) + p : p));
  const insideWorkflows = depth === 0 ? '\\./' : `\\./|(\\.\\./){1,${depth}}(?!\\.)`;
  return [
    'error',
    {
      patterns: [
        {
          regex: `^(?!${insideWorkflows}|(${allowed.map(escapeRegex).join('|')})$)`,
          caseSensitive: true,
          allowTypeImports: true,
          message:
            'Workflow code runs in a deterministic sandbox: import this only as `import type`, or move the code into a workflow-safe module (see WORKFLOW_RUNTIME_IMPORTS in eslint.config.js).',
        },
      ],
    },
  ];
};

const workflowSandboxGlobals = [
  ...['setTimeout', 'setInterval', 'setImmediate', 'clearTimeout', 'clearInterval', 'clearImmediate'].map((name) => ({
    name,
    message: 'Use sleep() or condition(fn, timeout) from @temporalio/workflow: a durable timer recorded in history.',
  })),
  ...['process', 'require', 'Buffer', 'global', '__dirname', '__filename', 'fetch'].map((name) => ({
    name,
    message: 'Node and I/O APIs do not exist in the workflow sandbox: do this in an activity.',
  })),
  ...['WeakRef', 'FinalizationRegistry'].map((name) => ({
    name,
    message: 'Garbage collection timing differs between runs, so a replay could take another path.',
  })),
];

module.exports = defineConfig(
  // What the build, the stack and the tests write (.gitignore).
  { ignores: ['dist/', '.data/', '.tools/', 'test-artifacts/'] },
  {
    files: ['**/*.js'],
    extends: [js.configs.recommended],
    languageOptions: {
      sourceType: 'commonjs',
      globals: {
        require: 'readonly',
        module: 'writable',
        __dirname: 'readonly',
        process: 'readonly',
        console: 'readonly',
        Buffer: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        setInterval: 'readonly',
        clearInterval: 'readonly',
        URL: 'readonly',
      },
    },
  },
  {
    files: ['**/*.ts'],
    extends: [js.configs.recommended, tseslint.configs.recommended],
    languageOptions: {
      parserOptions: { project: './tsconfig.json', tsconfigRootDir: __dirname },
    },
    rules: {
      // An unawaited activity call, Redis write or Docker request fails silently or out of order.
      '@typescript-eslint/no-floating-promises': 'error',
    },
  },
  {
    // The layers of src/ (docs/ARCHITECTURE.md) sit below the activities. The process entry is the
    // composition root: it hands activities/ createActivities to createManager, which registers
    // them with the Temporal workers without importing them.
    files: ['src/**/*.ts'],
    ignores: ['src/manager.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            { regex: '(^|/)activities(/|$)', message: 'src/ sits below activities/: move what both need into src/host or src/shared.' },
          ],
        },
      ],
    },
  },
  {
    files: ['workflows/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': workflowImportsRule(0),
      'no-restricted-globals': ['error', ...workflowSandboxGlobals],
      'no-restricted-syntax': ['error', { selector: 'ImportExpression', message: 'Workflow code cannot load modules at run time.' }],
    },
  },
  // One folder down (workflows/workerLifecycle/). A file deeper still gets the rule above, which
  // refuses its `../../src/...` imports: add its depth here.
  { files: ['workflows/*/*.ts'], rules: { '@typescript-eslint/no-restricted-imports': workflowImportsRule(1) } },
);
