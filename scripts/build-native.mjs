#!/usr/bin/env node
// Builds the native addon (build/Release/instill.node) with cmake-js in Release mode.
//
//   node scripts/build-native.mjs              always build
//   node scripts/build-native.mjs --if-missing skip when a prebuilt binary for this
//                                              platform ships in prebuilds/ (npm install)
//   node scripts/build-native.mjs --debug      Debug build
//   INSTILL_CUDA=on node scripts/build-native.mjs   with the CUDA backend (auto|on|off; default auto)
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);

if (args.includes('--if-missing')) {
  const dir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  if (existsSync(dir) && readdirSync(dir).some((f) => f.endsWith('.node'))) {
    console.log(`instill: using the prebuilt binary in ${dir}`);
    process.exit(0);
  }
}

const require = createRequire(import.meta.url);
let cmakeJs;
try {
  cmakeJs = join(dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
} catch {
  console.error('instill: cmake-js is not installed; run `npm install` first.');
  process.exit(1);
}
const cmakeArgs = [cmakeJs, 'compile', '--directory', root];
if (args.includes('--debug')) cmakeArgs.push('--debug');
// INSTILL_CUDA=auto|on|off (default auto): see the CUDA section of CMakeLists.txt.
const cudaMode = process.env.INSTILL_CUDA ?? 'auto';
if (!['auto', 'on', 'off'].includes(cudaMode)) {
  console.error(`instill: INSTILL_CUDA must be auto, on or off, got '${cudaMode}'`);
  process.exit(1);
}
cmakeArgs.push(`--CDINSTILL_CUDA=${cudaMode}`);
const parallel = process.env.CMAKE_BUILD_PARALLEL_LEVEL ?? String(Math.max(1, (await import('node:os')).availableParallelism()));
const result = spawnSync(process.execPath, cmakeArgs, {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: parallel },
});
if (result.status !== 0) {
  console.error(
    '\ninstill: building the native addon failed. It needs cmake >= 3.18 and a C++17 compiler (g++ or clang++).\n' +
      'On Debian/Ubuntu: apt-get install cmake g++. Then run `npm run build:native` again.',
  );
  process.exit(result.status ?? 1);
}
