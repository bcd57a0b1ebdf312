// The MCP endpoint of `pybox serve` (POST /mcp, Streamable HTTP) under the official MCP
// TypeScript SDK (@modelcontextprotocol/sdk, pinned by package-lock.json): its Client over
// StreamableHTTPClientTransport against a real server the test starts, as an agent would speak
// to it (the cases of cases.mjs, as over stdio, and what only HTTP has).  The SDK validates
// every structuredContent against the tool's outputSchema.  The protocol's edges (status
// codes, headers, error bodies) are checked with plain fetch.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import * as cases from './cases.mjs';
import { startServer, stopServer, createKey, token } from './lib.mjs';

const ADMIN = 'admin-' + token();
const RPM = 3; // the anonymous rate, low enough to reach
let srv, MCP, KEY, OTHER, client;

// The SDK rejects a cancelled call once it has sent notifications/cancelled, not once the
// server has it: its fetch (below) tells when the server answered one.
let cancelWaiters = [];
const cancelDelivered = () => new Promise((resolve) => cancelWaiters.push(resolve));
function observingFetch(url, init) {
  const res = fetch(url, init);
  let method = null;
  try {
    method = JSON.parse(init.body).method;
  } catch { /* not a message */ }
  if (method === 'notifications/cancelled') {
    res.then((r) => {
      const waiters = cancelWaiters;
      cancelWaiters = [];
      for (const w of waiters) w(r.status);
    }, () => {});
  }
  return res;
}

/* What the cancels of cases.mjs check of this transport: the server answered the SDK's
 * notifications/cancelled with 202. */
function cancelAccepted() {
  const delivered = cancelDelivered();
  return async () => assert.equal(await delivered, 202);
}

/* A Client connected to /mcp with `key` (none: anonymous). */
async function connect(key) {
  const c = new Client({ name: 'pybox-sdk-http-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(MCP), {
    requestInit: { headers: key ? { Authorization: `Bearer ${key}` } : {} },
    fetch: observingFetch,
  });
  await c.connect(transport);
  return c;
}

/* POST one message (an object, or raw text) to /mcp with `headers`. */
function post(body, headers = {}) {
  return fetch(MCP, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream',
      ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

const INIT = { jsonrpc: '2.0', id: 1, method: 'initialize', params: {
  protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } };

/* POST `body` to BASE/mcp with node:http, which sends the Host header given: its status. */
function postWithHost(base, host, headers = {}, body = INIT) {
  const port = new URL(base).port;
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/mcp', method: 'POST', headers: {
      host, 'content-type': 'application/json', accept: 'application/json, text/event-stream',
      ...headers } }, (res) => { res.resume(); resolve(res.statusCode); });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

/* An MCP session opened by hand (initialize, notifications/initialized): its id. */
async function rawSession(headers = {}) {
  const res = await post(INIT, headers);
  assert.equal(res.status, 200, await res.clone().text());
  const sid = res.headers.get('mcp-session-id');
  assert.match(sid, /^mcp_[0-9a-f]{32}$/);
  await res.json();
  const note = await post({ jsonrpc: '2.0', method: 'notifications/initialized' },
    { ...headers, 'mcp-session-id': sid });
  assert.equal(note.status, 202);
  return sid;
}

/* A JSON-RPC error body: {jsonrpc, id: null, error: {code, message}}. */
async function rpcError(res, status) {
  assert.equal(res.status, status);
  assert.match(res.headers.get('content-type') || '', /^application\/json/);
  const body = await res.json();
  assert.equal(body.jsonrpc, '2.0');
  assert.equal(body.id, null);
  assert.equal(typeof body.error.code, 'number');
  assert.equal(typeof body.error.message, 'string');
  return body.error;
}

before(async () => {
  srv = await startServer(ADMIN, ['--rpm', String(RPM)]);
  MCP = srv.base + '/mcp';
  KEY = createKey(srv.data, 'agent', ['--rpm', 'unlimited', '--rpd', 'unlimited', '--timeout', '30']);
  OTHER = createKey(srv.data, 'other', ['--rpm', 'unlimited', '--rpd', 'unlimited']);
  client = await connect(KEY);
});

after(async () => {
  if (client) await client.close();
  if (srv) {
    const [code] = await stopServer(srv);
    assert.equal(code, 0, srv.log());
  }
});

cases.all(() => client, cancelAccepted);

test('a call with a progressToken is answered as Server-Sent Events that end', async () => {
  const sid = await rawSession({ authorization: `Bearer ${KEY}` });
  const res = await post({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: {
    name: 'run_python', arguments: { code: 'import time; time.sleep(2.2); print("done")' },
    _meta: { progressToken: 'tok' } } },
  { authorization: `Bearer ${KEY}`, 'mcp-session-id': sid });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/event-stream/);
  const text = await res.text(); // the stream ends after the response
  const events = text.split(/\r?\n\r?\n/).filter((e) => e.trim() !== '');
  const msgs = events.map((e) => {
    const lines = e.split(/\r?\n/);
    assert.ok(lines.includes('event: message'), e);
    return JSON.parse(lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n'));
  });
  const progress = msgs.filter((m) => m.method === 'notifications/progress');
  assert.ok(progress.length >= 2, text);
  assert.ok(progress.every((m) => m.params.progressToken === 'tok'));
  const last = msgs.at(-1);
  assert.equal(last.id, 7);
  assert.equal(last.result.structuredContent.stdout, 'done\n');
});

test('a bad key: the SDK fails with 401; a good key works', async () => {
  await assert.rejects(connect('pbx_not_a_key_' + token()), (e) => {
    assert.equal(e.code, 401, String(e));
    return true;
  });
  const res = await post(INIT, { authorization: 'Bearer nope' });
  assert.equal(res.status, 401);
  assert.match(res.headers.get('www-authenticate') || '', /^Bearer/);
  const good = await connect(OTHER);
  try {
    const r = await good.callTool({ name: 'run_python', arguments: { code: 'print("k")' } });
    assert.equal(r.structuredContent.stdout, 'k\n');
  } finally {
    await good.close();
  }
});

test('an anonymous caller shares the rate limit of /v1/execute: over it, isError saying when', async () => {
  const anon = await connect(null);
  try {
    const results = [];
    for (let i = 0; i < RPM + 1; i++) {
      results.push(await anon.callTool({ name: 'run_python', arguments: { code: 'print(1)' } }));
    }
    const over = results.at(-1);
    assert.equal(over.isError, true, JSON.stringify(results.map((r) => r.structuredContent)));
    assert.match(over.structuredContent.error.message, /retry in \d+ s/);
    assert.ok(results.slice(0, RPM).every((r) => r.isError === false),
      JSON.stringify(results.map((r) => r.structuredContent)));
  } finally {
    await anon.close();
  }
});

test('initialize: 200 JSON with an Mcp-Session-Id; a notification: 202 without a body', async () => {
  const res = await post(INIT);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^application\/json/);
  assert.match(res.headers.get('mcp-session-id'), /^mcp_[0-9a-f]{32}$/);
  const body = await res.json();
  assert.equal(body.id, 1);
  assert.equal(body.result.serverInfo.name, 'pybox');
  const note = await post({ jsonrpc: '2.0', method: 'notifications/initialized' },
    { 'mcp-session-id': res.headers.get('mcp-session-id') });
  assert.equal(note.status, 202);
  assert.equal(await note.text(), '');
  const response = await post({ jsonrpc: '2.0', id: 'x', result: {} },
    { 'mcp-session-id': res.headers.get('mcp-session-id') });
  assert.equal(response.status, 202);
  assert.equal(await response.text(), '');
});

test('a foreign Origin or Host is 403; the server\'s own origin passes', async () => {
  await rpcError(await post(INIT, { origin: 'http://evil.example' }), 403);
  const own = await post(INIT, { origin: srv.base });
  assert.equal(own.status, 200);
  await own.json();
  const port = new URL(srv.base).port;
  assert.equal(await postWithHost(srv.base, `evil.example:${port}`), 403);
  assert.equal(await postWithHost(srv.base, `localhost:${port}`), 200);
});

test('malformed JSON: 400 with -32700, and the server keeps serving', async () => {
  const sid = await rawSession();
  for (const bad of ['{not json', '{"jsonrpc": "2.0", "id": 1,', '\u00ff\u00fe']) {
    const err = await rpcError(await post(bad, { 'mcp-session-id': sid }), 400);
    assert.equal(err.code, -32700);
  }
  const ping = await post({ jsonrpc: '2.0', id: 2, method: 'ping' }, { 'mcp-session-id': sid });
  assert.equal(ping.status, 200);
  assert.deepEqual(await ping.json(), { jsonrpc: '2.0', id: 2, result: {} });
  await client.ping();
});

test('GET is 405 with Allow; another Content-Type is 415; a bad protocol version is 400', async () => {
  const get = await fetch(MCP, { headers: { accept: 'text/event-stream' } });
  assert.equal(get.status, 405);
  assert.match(get.headers.get('allow'), /POST/);
  assert.match(get.headers.get('allow'), /DELETE/);
  await get.body?.cancel();
  const sid = await rawSession();
  const plain = await post(JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'ping' }),
    { 'content-type': 'text/plain', 'mcp-session-id': sid });
  assert.equal(plain.status, 415);
  await plain.body?.cancel();
  await rpcError(await post({ jsonrpc: '2.0', id: 4, method: 'ping' },
    { 'mcp-session-id': sid, 'mcp-protocol-version': '1999-01-01' }), 400);
  const ok = await post({ jsonrpc: '2.0', id: 5, method: 'ping' },
    { 'mcp-session-id': sid, 'mcp-protocol-version': '2025-06-18' });
  assert.equal(ok.status, 200);
  await ok.json();
});

test('without Mcp-Session-Id: 400; an unknown one, or another key\'s: 404', async () => {
  await rpcError(await post({ jsonrpc: '2.0', id: 1, method: 'tools/list' }), 400);
  await rpcError(await post({ jsonrpc: '2.0', id: 1, method: 'tools/list' },
    { 'mcp-session-id': 'mcp_' + '0'.repeat(32) }), 404);
  const sid = await rawSession({ authorization: `Bearer ${KEY}` });
  await rpcError(await post({ jsonrpc: '2.0', id: 1, method: 'tools/list' },
    { 'mcp-session-id': sid, authorization: `Bearer ${OTHER}` }), 404);
  const mine = await post({ jsonrpc: '2.0', id: 1, method: 'tools/list' },
    { 'mcp-session-id': sid, authorization: `Bearer ${KEY}` });
  assert.equal(mine.status, 200);
  assert.equal((await mine.json()).result.tools.length, 6);
});

test('DELETE ends the MCP session (then 404) and closes the sessions made through it', async () => {
  const auth = { authorization: `Bearer ${KEY}` };
  const sid = await rawSession(auth);
  const made = await post({ jsonrpc: '2.0', id: 2, method: 'tools/call',
    params: { name: 'create_session', arguments: {} } }, { ...auth, 'mcp-session-id': sid });
  assert.equal(made.status, 200);
  const ses = (await made.json()).result.structuredContent.session_id;
  const state = async () => {
    const res = await fetch(`${srv.base}/v1/sessions/${ses}`, { headers: auth });
    if (res.status === 404) return (await res.body?.cancel(), 'forgotten');
    assert.equal(res.status, 200);
    return (await res.json()).status;
  };
  assert.equal(await state(), 'idle');
  const del = await fetch(MCP, { method: 'DELETE', headers: { ...auth, 'mcp-session-id': sid } });
  assert.equal(del.status, 204);
  await rpcError(await post({ jsonrpc: '2.0', id: 3, method: 'ping' },
    { ...auth, 'mcp-session-id': sid }), 404);
  assert.ok(['dead', 'forgotten'].includes(await state()));

  // The SDK's terminateSession() is the same DELETE: the id it had is 404 after it.
  const c = await connect(KEY);
  try {
    await c.ping();
    const old = c.transport.sessionId;
    assert.match(old, /^mcp_[0-9a-f]{32}$/);
    await c.transport.terminateSession();
    assert.equal(c.transport.sessionId, undefined);
    await rpcError(await post({ jsonrpc: '2.0', id: 4, method: 'ping' },
      { ...auth, 'mcp-session-id': old }), 404);
  } finally {
    await c.close();
  }
});

test('--mcp keyed refuses anonymous callers with 401; --mcp-allowed-hosts and --cors-origin '
  + 'let more in; --mcp off has no /mcp', async () => {
  const keyed = await startServer(ADMIN, ['--mcp', 'keyed', '--no-preload', '--spares', '0:0',
    '--mcp-allowed-hosts', 'pybox.test', '--cors-origin', 'http://app.example']);
  try {
    const url = keyed.base + '/mcp';
    const anon = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json',
      accept: 'application/json, text/event-stream' }, body: JSON.stringify(INIT) });
    assert.equal(anon.status, 401);
    assert.match(anon.headers.get('www-authenticate') || '', /^Bearer/);
    const withKey = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json',
      accept: 'application/json, text/event-stream', authorization: `Bearer ${ADMIN}` },
    body: JSON.stringify(INIT) });
    assert.equal(withKey.status, 200);
    await withKey.json();
    const admin = { authorization: `Bearer ${ADMIN}` };
    const port = new URL(keyed.base).port;
    assert.equal(await postWithHost(keyed.base, `pybox.test:${port}`, admin), 200);
    assert.equal(await postWithHost(keyed.base, `evil.example:${port}`, admin), 403);
    assert.equal(await postWithHost(keyed.base, `127.0.0.1:${port}`,
      { ...admin, origin: 'http://app.example' }), 200);
    assert.equal(await postWithHost(keyed.base, `127.0.0.1:${port}`,
      { ...admin, origin: 'http://evil.example' }), 403);
  } finally {
    assert.equal((await stopServer(keyed))[0], 0, keyed.log());
  }
  const off = await startServer(ADMIN, ['--mcp', 'off', '--no-preload', '--spares', '0:0']);
  try {
    const res = await fetch(off.base + '/mcp', { method: 'POST', headers: {
      'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify(INIT) });
    assert.equal(res.status, 404);
    await res.body?.cancel();
  } finally {
    assert.equal((await stopServer(off))[0], 0, off.log());
  }
});
