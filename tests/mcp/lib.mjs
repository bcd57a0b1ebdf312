// What the MCP tests share: the pybox binary, a real `pybox serve` started for a test file (in
// a temporary directory of its own; ../serve.mjs), a key made with `pybox keys create`, and the
// sandboxed processes seen from the host (to prove that cancelled code is gone).
//
// Env: PYBOX (the binary; default <repo>/build/pybox).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PYBOX, NO_EXIT, cleanEnv, startServer as serveIn, stopServer as stop } from '../serve.mjs';

export { PYBOX, cleanEnv };

/*
 * Start `pybox serve` (../serve.mjs) with its data in a new temporary directory, the admin key
 * `adminKey` and `args`; resolves with {child, base, data, tmp, log()} once it wrote its URL.
 */
export function startServer(adminKey, args = []) {
  return serveIn(fs.mkdtempSync(path.join(os.tmpdir(), 'pybox-mcp-')), adminKey, args);
}

/* SIGTERM the server of startServer() and wait for it (30 s at most); its temporary directory
 * is removed once it exited. Resolves with [code, signal]. */
export async function stopServer(srv) {
  const result = await stop(srv.child);
  if (result[0] !== NO_EXIT) fs.rmSync(srv.tmp, { recursive: true, force: true });
  return result;
}

/* A new API key in the store of DATA (`pybox keys create`, policy options `args`): its token. */
export function createKey(data, name, args = []) {
  const out = execFileSync(PYBOX, ['keys', 'create', '--name', name, '--data', data, ...args],
    { env: cleanEnv(), encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const token = out.trim();
  assert.ok(token.length >= 16 && !/\s/.test(token), `pybox keys create printed ${JSON.stringify(out)}`);
  return token;
}

// Sandboxed processes run under uids of the jail's range (1000000000 and up).
const JAIL_UID_MIN = 1000000000;
const JAIL_UID_MAX = 1000065535;

/* Whether the process PID is gone (or a zombie). */
export function pidGone(pid) {
  let stat;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return true;
  }
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state === 'Z' || state === 'X';
}

/*
 * The host pid of a live sandboxed process that sees the regular file `file` (as the sandbox
 * sees it, e.g. /work/ready-TOKEN) through /proc/PID/root, or null. Give the file a name no
 * other run uses: this is how a test knows its code got that far, and which process runs it.
 */
export function jailFilePid(file) {
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let status;
    try {
      status = fs.readFileSync(`/proc/${entry}/status`, 'utf8');
    } catch {
      continue;
    }
    const uid = Number((status.match(/^Uid:\s+(\d+)/m) || [])[1]);
    if (!(uid >= JAIL_UID_MIN && uid <= JAIL_UID_MAX) || pidGone(entry)) continue;
    try {
      if (fs.statSync(`/proc/${entry}/root${file}`).isFile()) return Number(entry);
    } catch { /* not this one */ }
  }
  return null;
}

/* Poll `cond` every 10 ms until it gives a truthy value (returned) or `ms` pass (an error). */
export async function until(cond, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = cond();
    if (v) return v;
    assert.ok(Date.now() < deadline, `${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/* A name no other run uses, for a marker file. */
export function token() {
  return `${process.pid}-${Date.now()}-${Math.random().toString(16).slice(2)}`;
}
