// Bundles each page script in pages/ into dist/ and copies the HTML next to it, so dist/
// is a folder of static files a relay (or file://) can serve.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const pages = join(root, 'pages');
const out = join(root, 'dist');
mkdirSync(out, { recursive: true });
const entries = readdirSync(pages)
  .filter((f) => f.endsWith('.ts') && f !== 'common.ts')
  .map((f) => join(pages, f));
if (entries.length > 0) {
  await build({
    entryPoints: entries,
    bundle: true,
    // Classic scripts (not modules), so the pages also work when opened from file://.
    format: 'iife',
    target: 'chrome110',
    sourcemap: true,
    outdir: out,
    logLevel: 'warning',
  });
}
for (const f of readdirSync(pages).filter((f) => f.endsWith('.html') || f.endsWith('.css'))) {
  copyFileSync(join(pages, f), join(out, f));
}
