// pybox mcp under the official MCP TypeScript SDK (@modelcontextprotocol/sdk, pinned by
// package-lock.json): its Client over StdioClientTransport spawns `pybox mcp` and speaks to it
// as an agent would.  The SDK validates every structuredContent against the tool's
// outputSchema, so these calls also prove the schemas and results agree.  Malformed lines are
// written by hand to a `pybox mcp` of the test's own.  The last tests run `pybox mcp --server`
// against a real `pybox serve`.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import readline from 'node:readline';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { PYBOX, cleanEnv, createKey, jailFilePid, pidGone, startServer, stopServer, until, token }
  from './lib.mjs';

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

test('server info and tools', async () => {
  assert.equal(client.getServerVersion().name, 'pybox');
  assert.ok(client.getInstructions().includes('Importable modules'));
  const { tools } = await client.listTools();
  assert.deepEqual(tools.map((t) => t.name), ['run_python', 'create_session', 'write_files',
    'read_file', 'list_files', 'close_session']);
  for (const t of tools) {
    assert.equal(t.inputSchema.additionalProperties, false);
    assert.equal(t.outputSchema.type, 'object');
  }
  await client.ping();
});

test('print(1+1)', async () => {
  const r = await client.callTool({ name: 'run_python', arguments: { code: 'print(1+1)' } });
  assert.equal(r.isError, false);
  assert.equal(r.structuredContent.stdout, '2\n');
  assert.equal(r.structuredContent.exit_code, 0);
});

test('a failing script and a timeout are isError with structuredContent', async () => {
  let r = await client.callTool({ name: 'run_python', arguments: { code: '1/0' } });
  assert.equal(r.isError, true);
  assert.equal(r.structuredContent.error.type, 'ZeroDivisionError');
  r = await client.callTool({ name: 'run_python',
    arguments: { code: 'while True: pass', timeout_ms: 1000 } });
  assert.equal(r.isError, true);
  assert.equal(r.structuredContent.status, 'timeout');
});

test('a chart is a PNG image item', async () => {
  const r = await client.callTool({ name: 'run_python', arguments: {
    code: 'import matplotlib.pyplot as plt\nplt.plot([1, 2], [3, 4])\nplt.show()' } });
  const img = r.content.find((c) => c.type === 'image');
  assert.equal(img.mimeType, 'image/png');
  assert.deepEqual([...Buffer.from(img.data, 'base64').subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
});

test('files in and out through resource_link and readResource', async () => {
  const r = await client.callTool({ name: 'run_python', arguments: {
    code: "open('out.txt', 'w').write(open('in.txt').read()[::-1])",
    files: [{ path: 'in.txt', content: 'abc' }], return_files: ['out.txt'] } });
  const link = r.content.find((c) => c.type === 'resource_link');
  assert.equal(link.name, 'out.txt');
  const res = await client.readResource({ uri: link.uri });
  assert.equal(res.contents[0].text, 'cba');
});

test('a session keeps state; closed, it is isError', async () => {
  const s = await client.callTool({ name: 'create_session', arguments: {} });
  const sid = s.structuredContent.session_id;
  await client.callTool({ name: 'run_python', arguments: { code: 'x = 41', session_id: sid } });
  const r = await client.callTool({ name: 'run_python',
    arguments: { code: 'x + 1', session_id: sid } });
  assert.equal(r.structuredContent.value, '42');
  await client.callTool({ name: 'close_session', arguments: { session_id: sid } });
  const again = await client.callTool({ name: 'run_python',
    arguments: { code: 'x', session_id: sid } });
  assert.equal(again.isError, true);
});


test('a 50 MB print: the result stays small, the output is kept behind a resource link', async () => {
  const r = await client.callTool({ name: 'run_python', arguments: {
    code: "import sys\nfor _ in range(50):\n    sys.stdout.write('x' * 1_000_000)\n" } });
  assert.ok(JSON.stringify(r).length < 100000, `result of ${JSON.stringify(r).length} bytes`);
  const sc = r.structuredContent;
  assert.equal(sc.status, 'ok');
  assert.equal(sc.stdout_truncated, true);
  assert.ok(sc.stdout.length > 0 && sc.stdout.length <= 20000, `stdout of ${sc.stdout.length}`);
  assert.match(sc.stdout, /^x+$/);
  assert.ok(r.content[0].text.length < 30000);
  const link = r.content.find((c) => c.type === 'resource_link' && c.uri === sc.stdout_uri);
  assert.ok(link, JSON.stringify(r.content.map((c) => c.type)));
  assert.equal(link.name, 'stdout.txt');
  // What pybox kept of the stream (its output limit, over the 20 KB of the result) is all there.
  const res = await client.readResource({ uri: link.uri });
  const text = res.contents[0].text;
  assert.equal(text.length, link.size);
  assert.ok(text.length > sc.stdout.length, `resource of ${text.length} bytes`);
  assert.ok(text.startsWith(sc.stdout));
  assert.match(text, /^x+$/);
});

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

test('progress notifications on a long call', async () => {
  const seen = [];
  const r = await client.callTool({ name: 'run_python',
    arguments: { code: 'import time\nfor i in range(3):\n    print(i, flush=True); time.sleep(1)' } },
  undefined, { onprogress: (p) => seen.push(p) });
  assert.equal(r.structuredContent.stdout, '0\n1\n2\n');
  assert.ok(seen.length >= 2, `progress: ${JSON.stringify(seen)}`);
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i].progress > seen[i - 1].progress);
  assert.ok(seen.every((p) => typeof p.message === 'string'));
});

test('a cancelled one-shot call: its processes are gone within 200 ms', async () => {
  const marker = `/work/ready-${token()}`;
  const ac = new AbortController();
  const call = client.callTool({ name: 'run_python', arguments: {
    code: `open('${marker}', 'w').close()\nimport time\ntime.sleep(60)`, timeout_ms: 60000 } },
  undefined, { signal: ac.signal });
  const rejected = assert.rejects(call);
  const pid = await until(() => jailFilePid(marker), 60000, 'the code started');
  const t0 = performance.now();
  ac.abort('test');
  await until(() => pidGone(pid) && jailFilePid(marker) === null, 200, 'the cancelled code is gone');
  await rejected;
  assert.ok(performance.now() - t0 < 1000);
  // The server still serves.
  const r = await client.callTool({ name: 'run_python', arguments: { code: 'print(3)' } });
  assert.equal(r.structuredContent.stdout, '3\n');
});

test('a cancelled call in a session: the next call of the session runs at once', async () => {
  const sid = (await client.callTool({ name: 'create_session', arguments: {} })).structuredContent.session_id;
  await client.callTool({ name: 'run_python', arguments: { code: 'y = 5', session_id: sid } });
  const marker = `/work/ready-${token()}`;
  const ac = new AbortController();
  const call = client.callTool({ name: 'run_python', arguments: { session_id: sid,
    code: `open('${marker}', 'w').close()\nimport time\nwhile True: time.sleep(0.01)` } },
  undefined, { signal: ac.signal });
  const rejected = assert.rejects(call);
  await until(() => jailFilePid(marker), 60000, 'the code started');
  const t0 = performance.now();
  ac.abort('test');
  await rejected;
  // A session runs one call at a time: this one's answer means the loop is over.
  const r = await client.callTool({ name: 'run_python', arguments: { code: 'y + 1', session_id: sid } });
  const took = performance.now() - t0;
  assert.equal(r.isError, false, JSON.stringify(r.structuredContent));
  assert.equal(r.structuredContent.value, '6');
  assert.ok(took < 200, `the next call of the session took ${took} ms`);
  await client.callTool({ name: 'close_session', arguments: { session_id: sid } });
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

  test('print(1+1), a failing script, a session', async () => {
    let r = await remote.callTool({ name: 'run_python', arguments: { code: 'print(1+1)' } });
    assert.equal(r.isError, false);
    assert.equal(r.structuredContent.stdout, '2\n');
    r = await remote.callTool({ name: 'run_python', arguments: { code: '1/0' } });
    assert.equal(r.isError, true);
    assert.equal(r.structuredContent.error.type, 'ZeroDivisionError');
    const sid = (await remote.callTool({ name: 'create_session', arguments: {} })).structuredContent.session_id;
    await remote.callTool({ name: 'run_python', arguments: { code: 'x = 41', session_id: sid } });
    r = await remote.callTool({ name: 'run_python', arguments: { code: 'x + 1', session_id: sid } });
    assert.equal(r.structuredContent.value, '42');
    await remote.callTool({ name: 'close_session', arguments: { session_id: sid } });
    r = await remote.callTool({ name: 'run_python', arguments: { code: 'x', session_id: sid } });
    assert.equal(r.isError, true);
  });

  test('a cancelled one-shot call: its processes on the server are gone within 200 ms', async () => {
    const marker = `/work/ready-${token()}`;
    const ac = new AbortController();
    const call = remote.callTool({ name: 'run_python', arguments: {
      code: `open('${marker}', 'w').close()\nimport time\ntime.sleep(30)`, timeout_ms: 30000 } },
    undefined, { signal: ac.signal });
    const rejected = assert.rejects(call);
    const pid = await until(() => jailFilePid(marker), 60000, 'the code started');
    ac.abort('test');
    await until(() => pidGone(pid) && jailFilePid(marker) === null, 200, 'the cancelled code is gone');
    await rejected;
    const r = await remote.callTool({ name: 'run_python', arguments: { code: 'print(3)' } });
    assert.equal(r.structuredContent.stdout, '3\n');
  });

  test('a cancelled call in a session: the next call of the session runs at once', async () => {
    const sid = (await remote.callTool({ name: 'create_session', arguments: {} })).structuredContent.session_id;
    await remote.callTool({ name: 'run_python', arguments: { code: 'y = 5', session_id: sid } });
    const marker = `/work/ready-${token()}`;
    const ac = new AbortController();
    const call = remote.callTool({ name: 'run_python', arguments: { session_id: sid,
      code: `open('${marker}', 'w').close()\nimport time\nwhile True: time.sleep(0.01)` } },
    undefined, { signal: ac.signal });
    const rejected = assert.rejects(call);
    await until(() => jailFilePid(marker), 60000, 'the code started');
    const t0 = performance.now();
    ac.abort('test');
    await rejected;
    const r = await remote.callTool({ name: 'run_python', arguments: { code: 'y + 1', session_id: sid } });
    const took = performance.now() - t0;
    assert.equal(r.isError, false, JSON.stringify(r.structuredContent));
    assert.equal(r.structuredContent.value, '6');
    assert.ok(took < 200, `the next call of the session took ${took} ms`);
    await remote.callTool({ name: 'close_session', arguments: { session_id: sid } });
  });
});
