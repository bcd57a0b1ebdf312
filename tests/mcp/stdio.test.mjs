// pybox mcp under the official MCP TypeScript SDK (@modelcontextprotocol/sdk, pinned by
// package-lock.json): its Client over StdioClientTransport spawns `pybox mcp` and speaks to it
// as an agent would.  The SDK validates every structuredContent against the tool's
// outputSchema, so these calls also prove the schemas and results agree.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';

const PYBOX = process.env.PYBOX || new URL('../../build/pybox', import.meta.url).pathname;
let client;

before(async () => {
  client = new Client({ name: 'pybox-sdk-test', version: '1.0.0' });
  await client.connect(new StdioClientTransport({
    command: PYBOX, args: ['mcp', '--timeout', '20'], stderr: 'inherit',
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

test('progress and cancel', async () => {
  const seen = [];
  await client.callTool({ name: 'run_python', arguments: { code: 'import time; time.sleep(2.5)' } },
    undefined, { onprogress: (p) => seen.push(p.progress) });
  assert.ok(seen.length >= 2, `progress: ${seen}`);
  const ac = new AbortController();
  const t0 = Date.now();
  const call = client.callTool({ name: 'run_python',
    arguments: { code: 'import time; time.sleep(60)', timeout_ms: 60000 } },
    undefined, { signal: ac.signal });
  setTimeout(() => ac.abort('test'), 1000);
  await assert.rejects(call);
  assert.ok(Date.now() - t0 < 10000);
  // The server still serves, and the cancelled code is gone: a new call runs at once.
  const r = await client.callTool({ name: 'run_python', arguments: { code: 'print(3)' } });
  assert.equal(r.structuredContent.stdout, '3\n');
});
