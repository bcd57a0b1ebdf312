// `pybox serve`'s /mcp under the MCP conformance suite (@modelcontextprotocol/conformance,
// pinned by package-lock.json): the server scenarios that fit a server whose tools are its
// own (no test_* tools, prompts or resources of the suite's): server-initialize, ping,
// tools-list and dns-rebinding-protection, each `conformance server --url URL --scenario NAME
// -o DIR`, which exits 0 when no check failed and writes its checks to DIR/*/checks.json.
//
// Run with the node of tests/mcp-tools/node_modules/.bin (22.19 or later).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { CONFORMANCE, runNode, startServer, stopServer, tmpdir } from './lib.mjs';

const tmp = tmpdir();
let srv;

before(async () => { srv = await startServer(path.join(tmp, 'server')); });
after(async () => {
  if (srv) await stopServer(srv);
  fs.rmSync(tmp, { recursive: true, force: true });
});

/* Run SCENARIO against URL: {code, checks (from checks.json), out (what it printed)}. */
async function scenario(name, url) {
  const dir = fs.mkdtempSync(path.join(tmp, `${name}-`));
  const r = await runNode(CONFORMANCE, ['server', '--url', url, '--scenario', name, '-o', dir],
    { home: tmp });
  const out = `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
  const runs = fs.readdirSync(dir);
  assert.equal(runs.length, 1, `one result directory in ${dir}: ${runs}\n${out}`);
  const checks = JSON.parse(fs.readFileSync(path.join(dir, runs[0], 'checks.json'), 'utf8'));
  return { code: r.code, checks, out };
}

/* The scenario passes: exit 0, and every check of `ids` there and SUCCESS, none failed. */
function assertPassed(r, ids) {
  assert.equal(r.code, 0, r.out);
  const byId = Object.fromEntries(r.checks.map((c) => [c.id, c]));
  for (const id of ids) {
    assert.ok(byId[id], `no check ${id}: ${JSON.stringify(r.checks)}`);
    assert.equal(byId[id].status, 'SUCCESS', JSON.stringify(byId[id]));
  }
  assert.deepEqual(r.checks.filter((c) => c.status === 'FAILURE'), []);
  return byId;
}

test('server-initialize', async () => {
  assertPassed(await scenario('server-initialize', `${srv.base}/mcp`), ['server-initialize']);
});

test('ping', async () => {
  assertPassed(await scenario('ping', `${srv.base}/mcp`), ['ping']);
});

test('tools-list', async () => {
  const byId = assertPassed(await scenario('tools-list', `${srv.base}/mcp`), ['tools-list']);
  assert.deepEqual(byId['tools-list'].details.tools, ['run_python', 'create_session', 'write_files',
    'read_file', 'list_files', 'close_session']);
});

test('dns-rebinding-protection: a foreign Host and Origin 403, the server\'s own accepted', async () => {
  const byId = assertPassed(await scenario('dns-rebinding-protection', `${srv.base}/mcp`),
    ['localhost-host-rebinding-rejected', 'localhost-host-valid-accepted']);
  const rejected = byId['localhost-host-rebinding-rejected'].details;
  assert.equal(rejected.hostHeader, 'evil.example.com');
  assert.equal(rejected.statusCode, 403);
  assert.equal(rejected.body.error.code < 0, true, JSON.stringify(rejected.body));
  const accepted = byId['localhost-host-valid-accepted'].details;
  assert.equal(accepted.hostHeader, new URL(srv.base).host);
  assert.equal(accepted.statusCode, 200);
  assert.equal(accepted.body.result.serverInfo.name, 'pybox');
});

test('dns-rebinding-protection fails on a server told to answer to the foreign host', async () => {
  // --mcp-allowed-hosts lets evil.example.com in: the suite must then report the failure.
  const open = await startServer(path.join(tmp, 'allowing'), ['--mcp-allowed-hosts', 'evil.example.com']);
  try {
    const r = await scenario('dns-rebinding-protection', `${open.base}/mcp`);
    assert.equal(r.code, 1, r.out);
    const byId = Object.fromEntries(r.checks.map((c) => [c.id, c]));
    assert.equal(byId['localhost-host-rebinding-rejected'].status, 'FAILURE');
    assert.equal(byId['localhost-host-rebinding-rejected'].details.statusCode, 200);
    assert.equal(byId['localhost-host-valid-accepted'].status, 'SUCCESS');
  } finally {
    await stopServer(open);
  }
});
