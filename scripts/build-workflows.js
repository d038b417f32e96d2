// Bundles the workflows once at build time (dist/workflows.bundle.js), so the manager starts
// without running webpack: faster, and without webpack's memory in the long-running process.
const { mkdirSync, writeFileSync } = require('node:fs');
const path = require('node:path');
const { bundleWorkflowCode } = require('@temporalio/worker');

const root = path.resolve(__dirname, '..');
bundleWorkflowCode({
  workflowsPath: path.join(root, 'workflows/index.ts'),
  logger: { trace() {}, debug() {}, info() {}, warn: console.warn, error: console.error, log() {} },
})
  .then(({ code }) => {
    mkdirSync(path.join(root, 'dist'), { recursive: true });
    writeFileSync(path.join(root, 'dist/workflows.bundle.js'), code);
  })
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
