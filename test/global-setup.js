// Runs once before all tests: makes sure the two bundles the tests use are there and current,
// dist/workflows.bundle.js (every test's Temporal worker loads it, as the manager process does) and
// dist/wrapper/wrapper.js (worker images copy it). `npm test` has just built both (scripts/stack.sh
// runs `npm run build`), so this builds them only when a source changed since, as when one file
// is run with `npx jest` after an edit.
const { execFileSync } = require('node:child_process');
const { existsSync, readdirSync, statSync } = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const SOURCES = ['src', 'workflows'];

/** The newest modification time of the files under the source folders. */
function newestSource() {
  let newest = 0;
  for (const dir of SOURCES) {
    for (const f of readdirSync(path.join(root, dir), { recursive: true, encoding: 'utf8' })) {
      const s = statSync(path.join(root, dir, f));
      if (s.isFile()) newest = Math.max(newest, s.mtimeMs);
    }
  }
  return newest;
}

module.exports = async () => {
  const since = newestSource();
  for (const [bundle, script] of [
    ['dist/wrapper/wrapper.js', 'scripts/build-wrapper.js'],
    ['dist/workflows.bundle.js', 'scripts/build-workflows.js'],
  ]) {
    const file = path.join(root, bundle);
    if (!existsSync(file) || statSync(file).mtimeMs < since)
      execFileSync(process.execPath, [path.join(root, script)], { stdio: 'inherit' });
  }
};
