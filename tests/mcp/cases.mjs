// The SDK cases that do not depend on the transport: each function registers one node:test
// test that calls pybox's tools through the official SDK's Client, which `client()` gives when
// the test runs (a before() hook of the test file connects it). stdio.test.mjs runs them against
// `pybox mcp` (local, and with --server), http.test.mjs against /mcp of a pybox serve.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jailFilePid, pidGone, until, token } from './lib.mjs';

const run = (c, args) => c.callTool({ name: 'run_python', arguments: args });

/* The server's name and instructions, its six tools with strict schemas, and ping. */
export function serverInfo(client) {
  test('server info and tools', async () => {
    const c = client();
    assert.equal(c.getServerVersion().name, 'pybox');
    assert.ok(c.getInstructions().includes('Importable modules'));
    const { tools } = await c.listTools();
    assert.deepEqual(tools.map((t) => t.name), ['run_python', 'create_session', 'write_files',
      'read_file', 'list_files', 'close_session']);
    for (const t of tools) {
      assert.equal(t.inputSchema.additionalProperties, false);
      assert.equal(t.outputSchema.type, 'object');
    }
    await c.ping();
  });
}

export function print(client) {
  test('print(1+1)', async () => {
    const r = await run(client(), { code: 'print(1+1)' });
    assert.equal(r.isError, false);
    assert.equal(r.structuredContent.status, 'ok');
    assert.equal(r.structuredContent.stdout, '2\n');
    assert.equal(r.structuredContent.exit_code, 0);
    assert.equal(r.content[0].type, 'text');
  });
}

export function failingAndTimeout(client) {
  test('a failing script and a timeout are isError with structuredContent', async () => {
    let r = await run(client(), { code: '1/0' });
    assert.equal(r.isError, true);
    assert.equal(r.structuredContent.error.type, 'ZeroDivisionError');
    assert.match(r.structuredContent.stderr, /ZeroDivisionError/);
    const t0 = Date.now();
    r = await run(client(), { code: 'while True: pass', timeout_ms: 1000 });
    assert.equal(r.isError, true);
    assert.equal(r.structuredContent.status, 'timeout');
    assert.ok(Date.now() - t0 < 10000);
  });
}

export function bigOutput(client) {
  test('a 50 MB print: the result stays small, the output is kept behind a resource link', async () => {
    const r = await run(client(),
      { code: "import sys\nfor _ in range(50):\n    sys.stdout.write('x' * 1_000_000)\n" });
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
    const res = await client().readResource({ uri: link.uri });
    const text = res.contents[0].text;
    assert.equal(text.length, link.size);
    assert.ok(text.length > sc.stdout.length, `resource of ${text.length} bytes`);
    assert.ok(text.startsWith(sc.stdout));
    assert.match(text, /^x+$/);
  });
}

export function chart(client) {
  test('a chart is a PNG image item', async () => {
    const r = await run(client(),
      { code: 'import matplotlib.pyplot as plt\nplt.plot([1, 2], [3, 4])\nplt.show()' });
    assert.equal(r.isError, false, JSON.stringify(r.structuredContent));
    const img = r.content.find((c) => c.type === 'image');
    assert.ok(img, JSON.stringify(r.content.map((c) => c.type)));
    assert.equal(img.mimeType, 'image/png');
    assert.deepEqual([...Buffer.from(img.data, 'base64').subarray(0, 8)],
      [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  });
}

export function files(client) {
  test('files in and out through resource_link and readResource', async () => {
    const r = await run(client(), {
      code: "open('out.txt', 'w').write(open('in.txt').read()[::-1])\n"
        + "open('raw.bin', 'wb').write(bytes(range(256)))",
      files: [{ path: 'in.txt', content: 'abc' }], return_files: ['out.txt', 'raw.bin'] });
    assert.equal(r.isError, false, JSON.stringify(r.structuredContent));
    const links = Object.fromEntries(r.content.filter((c) => c.type === 'resource_link')
      .map((c) => [c.name, c]));
    assert.deepEqual(Object.keys(links).sort(), ['out.txt', 'raw.bin']);
    assert.equal((await client().readResource({ uri: links['out.txt'].uri })).contents[0].text, 'cba');
    const bin = (await client().readResource({ uri: links['raw.bin'].uri })).contents[0];
    assert.deepEqual([...Buffer.from(bin.blob, 'base64')], [...Array(256).keys()]);
  });
}

export function session(client) {
  test('a session keeps state; closed, it is isError', async () => {
    const c = client();
    const s = await c.callTool({ name: 'create_session', arguments: {} });
    const sid = s.structuredContent.session_id;
    assert.match(sid, /^ses_/);
    let r = await run(c, { code: 'x = 41', session_id: sid });
    assert.equal(r.isError, false);
    r = await run(c, { code: 'x + 1', session_id: sid });
    assert.equal(r.structuredContent.value, '42');
    assert.equal(r.structuredContent.session_id, sid);
    r = await c.callTool({ name: 'close_session', arguments: { session_id: sid } });
    assert.equal(r.isError, false);
    r = await run(c, { code: 'x', session_id: sid });
    assert.equal(r.isError, true);
    assert.equal(typeof r.structuredContent.error.message, 'string');
  });
}

export function progress(client) {
  test('progress notifications on a long call', async () => {
    const seen = [];
    const r = await client().callTool({ name: 'run_python',
      arguments: { code: 'import time\nfor i in range(3):\n    print(i, flush=True); time.sleep(1)' } },
    undefined, { onprogress: (p) => seen.push(p) });
    assert.equal(r.structuredContent.stdout, '0\n1\n2\n');
    assert.ok(seen.length >= 2, `progress: ${JSON.stringify(seen)}`);
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i].progress > seen[i - 1].progress);
    assert.ok(seen.every((p) => typeof p.message === 'string'));
  });
}

/* run_python with `args`, as a call the test will cancel: {ac, rejected}, the call's
 * AbortController and the check that the SDK rejects the call. */
function cancellable(c, args) {
  const ac = new AbortController();
  const call = c.callTool({ name: 'run_python', arguments: args }, undefined, { signal: ac.signal });
  return { ac, rejected: assert.rejects(call) };
}

/*
 * A one-shot call cancelled once its code runs: its processes are gone within 200 ms and the
 * server still serves. `watchCancel`, if given, is called just before the cancel; the function
 * it returns is awaited once the call is rejected (what the transport checks of the cancel).
 */
export function cancelOneShot(client, watchCancel = null,
  title = 'a cancelled one-shot call: its processes are gone within 200 ms') {
  test(title, async () => {
    const marker = `/work/ready-${token()}`;
    const { ac, rejected } = cancellable(client(), {
      code: `open('${marker}', 'w').close()\nimport time\ntime.sleep(30)`, timeout_ms: 30000 });
    const pid = await until(() => jailFilePid(marker), 60000, 'the code started');
    const check = watchCancel ? watchCancel() : null;
    const t0 = performance.now();
    ac.abort('test');
    await until(() => pidGone(pid) && jailFilePid(marker) === null, 200, 'the cancelled code is gone');
    await rejected;
    if (check) await check();
    assert.ok(performance.now() - t0 < 1000);
    // The server still serves.
    const r = await run(client(), { code: 'print(3)' });
    assert.equal(r.structuredContent.stdout, '3\n');
  });
}

/* A call in a session cancelled once its code runs: the next call of the session runs at once
 * (within 200 ms of the cancel). `watchCancel` as for cancelOneShot(). */
export function cancelInSession(client, watchCancel = null) {
  test('a cancelled call in a session: the next call of the session runs at once', async () => {
    const c = client();
    const sid = (await c.callTool({ name: 'create_session', arguments: {} })).structuredContent.session_id;
    await run(c, { code: 'y = 5', session_id: sid });
    const marker = `/work/ready-${token()}`;
    const { ac, rejected } = cancellable(c, { session_id: sid,
      code: `open('${marker}', 'w').close()\nimport time\nwhile True: time.sleep(0.01)` });
    await until(() => jailFilePid(marker), 60000, 'the code started');
    const check = watchCancel ? watchCancel() : null;
    const t0 = performance.now();
    ac.abort('test');
    await rejected;
    if (check) await check();
    // A session runs one call at a time: this one's answer means the loop is over.
    const r = await run(c, { code: 'y + 1', session_id: sid });
    const took = performance.now() - t0;
    assert.equal(r.isError, false, JSON.stringify(r.structuredContent));
    assert.equal(r.structuredContent.value, '6');
    assert.ok(took < 200, `the next call of the session took ${took} ms`);
    await c.callTool({ name: 'close_session', arguments: { session_id: sid } });
  });
}

/* Every case above, in this order; `watchCancel` as for cancelOneShot(). */
export function all(client, watchCancel = null) {
  serverInfo(client);
  print(client);
  failingAndTimeout(client);
  bigOutput(client);
  chart(client);
  files(client);
  session(client);
  progress(client);
  cancelOneShot(client, watchCancel);
  cancelInSession(client, watchCancel);
}
