// A real `pybox serve` for the node tests (tests/mcp, tests/browser): started on 127.0.0.1:0
// in a directory of the test's own, found by the URL it writes, stopped with SIGTERM.
// Node's own modules only, so that every test folder can import it whatever it installed.
//
// Env: PYBOX (the binary; default <repo>/build/pybox).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const PYBOX = path.resolve(process.env.PYBOX || path.join(HERE, '..', 'build', 'pybox'));

/* The environment without any PYBOX_* variable (and the old admin key's name), plus `extra`. */
export function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('PYBOX') && k !== 'PYTHON_EXE_KEY') env[k] = v;
  }
  return { ...env, ...extra };
}

/*
 * Start `pybox serve --listen 127.0.0.1:0` in the directory TMP, its data in TMP/data, with
 * the admin key `adminKey` and `args`; resolves with {child, base, data, tmp, log()} once it
 * has written its URL (120 s at most), rejects if it exits first.
 */
export function startServer(tmp, adminKey, args = []) {
  assert.ok(fs.existsSync(PYBOX), `pybox binary not found at ${PYBOX}: build it or set PYBOX`);
  const data = path.join(tmp, 'data');
  const urlFile = path.join(tmp, 'url');
  fs.mkdirSync(data);
  let log = '';
  const child = spawn(PYBOX, ['serve', '--listen', '127.0.0.1:0', '--data', data,
    '--url-file', urlFile, ...args],
  { env: cleanEnv({ PYBOX_ADMIN_KEY: adminKey }), stdio: ['ignore', 'ignore', 'pipe'], cwd: tmp });
  child.stderr.on('data', (b) => { log += b.toString(); });
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + 120000;
    const poll = () => {
      if (child.exitCode !== null) {
        reject(new Error(`pybox serve exited ${child.exitCode} at start:\n${log}`));
        return;
      }
      let text = '';
      try {
        text = fs.readFileSync(urlFile, 'utf8').trim();
      } catch { /* not yet */ }
      if (text.startsWith('http://')) resolve({ child, base: text, data, tmp, log: () => log });
      else if (Date.now() > deadline) reject(new Error(`pybox serve wrote no URL within 120 s:\n${log}`));
      else setTimeout(poll, 50);
    };
    poll();
  });
}

/* What stopServer() resolves with when the server did not exit in time. */
export const NO_EXIT = 'no exit within 30 s';

/*
 * SIGTERM the server process `child` (of startServer()) unless it has exited, and wait for it
 * (30 s at most): resolves with [code, signal], or [NO_EXIT, null].
 */
export async function stopServer(child) {
  if (child.exitCode !== null || child.signalCode !== null) return [child.exitCode, child.signalCode];
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve([code, signal])));
  child.kill('SIGTERM');
  let timer = null;
  const late = new Promise((resolve) => { timer = setTimeout(() => resolve([NO_EXIT, null]), 30000); });
  const result = await Promise.race([exited, late]);
  clearTimeout(timer);
  return result;
}
