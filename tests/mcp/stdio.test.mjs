// pybox mcp under the official MCP TypeScript SDK (@modelcontextprotocol/sdk, pinned by
// package-lock.json): its Client over StdioClientTransport spawns `pybox mcp` and speaks to it
// as an agent would (the cases of cases.mjs).  The SDK validates every structuredContent
// against the tool's outputSchema, so these calls also prove the schemas and results agree.
// Malformed lines are written by hand to a `pybox mcp` of the test's own.  The last tests run
// `pybox mcp --server` against a real `pybox serve`.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import readline from 'node:readline';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import * as cases from './cases.mjs';
import { PYBOX, cleanEnv, createKey, startServer, stopServer, token } from './lib.mjs';

let client;

before(async () => {
  client = new Client({ name: 'pybox-sdk-test', version: '1.0.0' });
  await client.connect(new StdioClientTransport({
    command: PYBOX, args: ['mcp', '--timeout', '20'], env: cleanEnv(), stderr: 'inherit',
  }));
});

after(async () => {
  await client.close();
});

cases.all(() => client);

/* `pybox mcp` spoken to line by line: send(line), next() -> the next message it wrote. */
function rawMcp() {
  const child = spawn(PYBOX, ['mcp'], { env: cleanEnv(), stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = [];
  const waiters = [];
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    const w = waiters.shift();
    if (w) w(line);
    else lines.push(line);
  });
  return {
    child,
    send: (line) => child.stdin.write(Buffer.concat([Buffer.from(line), Buffer.from('\n')])),
    next: () => new Promise((resolve, reject) => {
      if (lines.length > 0) return resolve(JSON.parse(lines.shift()));
      const timer = setTimeout(() => reject(new Error('no answer within 60 s')), 60000);
      waiters.push((line) => { clearTimeout(timer); resolve(JSON.parse(line)); });
    }),
  };
}

test('malformed JSON-RPC lines get -32700 with id null, and the server goes on', async () => {
  const mcp = rawMcp();
  try {
    for (const bad of ['{not json', Buffer.from([0xff, 0xfe, 0x7b]), '{"jsonrpc": "2.0", "id": 1,']) {
      mcp.send(bad);
      const msg = await mcp.next();
      assert.equal(msg.jsonrpc, '2.0');
      assert.equal(msg.id, null);
      assert.equal(msg.error.code, -32700, JSON.stringify(msg));
    }
    mcp.send(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: {
      protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } }));
    const init = await mcp.next();
    assert.equal(init.id, 1);
    assert.equal(init.result.serverInfo.name, 'pybox');
    mcp.send('{"jsonrpc":"2.0","method":"notifications/initialized"}');
    mcp.send('[1, 2');
    assert.equal((await mcp.next()).error.code, -32700);
    mcp.send('{"jsonrpc":"2.0","id":"p","method":"ping"}');
    assert.deepEqual(await mcp.next(), { jsonrpc: '2.0', id: 'p', result: {} });
  } finally {
    const exited = new Promise((resolve) => mcp.child.once('exit', resolve));
    mcp.child.stdin.end();
    assert.equal(await exited, 0);
  }
});

describe('pybox mcp --server: every call goes to a pybox serve', () => {
  let srv, remote;

  before(async () => {
    srv = await startServer('admin-' + token(), []);
    const key = createKey(srv.data, 'agent', ['--rpm', 'unlimited', '--rpd', 'unlimited',
      '--timeout', '30']);
    remote = new Client({ name: 'pybox-sdk-test', version: '1.0.0' });
    await remote.connect(new StdioClientTransport({
      command: PYBOX, args: ['mcp', '--server', srv.base], env: cleanEnv({ PYBOX_API_KEY: key }),
      stderr: 'inherit',
    }));
  });

  after(async () => {
    if (remote) await remote.close();
    if (srv) assert.equal((await stopServer(srv))[0], 0, srv.log());
  });

  cases.print(() => remote);
  cases.failingAndTimeout(() => remote);
  cases.session(() => remote);
  cases.cancelOneShot(() => remote, null,
    'a cancelled one-shot call: its processes on the server are gone within 200 ms');
  cases.cancelInSession(() => remote);
});
