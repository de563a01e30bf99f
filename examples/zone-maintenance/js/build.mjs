// Build the JavaScript zone-maintenance plugin: node build.mjs OUT.wasm
import { cp, mkdir, rm, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { componentize } from '@bytecodealliance/componentize-js';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2];
if (!out) {
  console.error('usage: node build.mjs OUT.wasm');
  process.exit(2);
}

// componentize-js takes one WIT folder, so assemble build/wit: our narrowed
// world (wit/plugin.wit: `scheduler-plugin` without the unused `log` import)
// with the contract as a dependency.
const witDir = resolve(here, 'build/wit');
await rm(witDir, { recursive: true, force: true });
await mkdir(resolve(witDir, 'deps'), { recursive: true });
await cp(resolve(here, 'wit/plugin.wit'), resolve(witDir, 'plugin.wit'));
await cp(resolve(here, '../../../wit/trellis-plugin-0.4.0'), resolve(witDir, 'deps/trellis-plugin-0.4.0'), {
  recursive: true,
});

const { component } = await componentize({
  sourcePath: resolve(here, 'plugin.js'),
  witPath: witDir,
  worldName: 'plugin',
  // A "pure" component: no WASI imports at all.
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
await writeFile(resolve(out), component);
