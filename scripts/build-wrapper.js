// Bundles the in-container wrapper (src/wrapper/main.ts and its imports) into one file that the
// worker image copies; the image's Node.js is Debian bookworm's (18).
const path = require('node:path');
const esbuild = require('esbuild');

const root = path.resolve(__dirname, '..');
esbuild
  .build({
    entryPoints: [path.join(root, 'src/wrapper/main.ts')],
    outfile: path.join(root, 'dist/wrapper/wrapper.js'),
    bundle: true,
    platform: 'node',
    target: 'node18',
    minify: false,
    legalComments: 'none',
    logLevel: 'warning',
  })
  .catch(() => process.exit(1));
