// pybox's MCP server under the MCP Inspector's CLI (@modelcontextprotocol/inspector, pinned by
// package-lock.json): `inspector --cli --format json` lists the tools and calls run_python,
// through `pybox mcp` over stdio and through `pybox serve`'s /mcp over Streamable HTTP, and
// the one JSON object it prints is checked.  Exit statuses are the Inspector's: 0 ok, 3 auth
// required, 5 a tool result with isError true.
//
// Run with the node of tests/mcp-tools/node_modules/.bin (22.19 or later).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { INSPECTOR, PYBOX, createKey, runNode, startServer, stopServer, tmpdir } from './lib.mjs';

const TOOLS = ['run_python', 'create_session', 'write_files', 'read_file', 'list_files', 'close_session'];

const tmp = tmpdir();
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/* `inspector --cli --format json ARGS...`: {code, json (stdout parsed, or null), stdout, stderr}. */
async function inspector(args) {
  const r = await runNode(INSPECTOR, ['--cli', '--format', 'json', ...args], { home: tmp });
  let json = null;
  try {
    json = JSON.parse(r.stdout);
  } catch { /* left null; the assertions show stdout */ }
  return { ...r, json };
}

function explain(r) {
  return `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
}

/* The checks, the same for both transports; `target` is the Inspector's arguments naming the server. */
function toolChecks(target) {
  test('tools/list: the six tools, closed input schemas', async () => {
    const r = await inspector([...target(), '--method', 'tools/list']);
    assert.equal(r.code, 0, explain(r));
    const { tools } = r.json.result;
    assert.deepEqual(tools.map((t) => t.name), TOOLS);
    for (const t of tools) {
      assert.equal(typeof t.description, 'string');
      assert.equal(t.inputSchema.type, 'object');
      assert.equal(t.inputSchema.additionalProperties, false, t.name);
      assert.equal(t.outputSchema.type, 'object', t.name);
    }
    assert.deepEqual(tools.find((t) => t.name === 'run_python').inputSchema.required, ['code']);
  });

  test('tools/list --strict: no tool schema the Inspector calls unportable', async () => {
    const r = await inspector([...target(), '--method', 'tools/list', '--strict']);
    assert.equal(r.code, 0, explain(r));
    assert.doesNotMatch(r.stderr, /^Error: tool/m);
    assert.deepEqual(r.json.result.tools.map((t) => t.name), TOOLS);
  });

  test('run_python print(1+1)', async () => {
    const r = await inspector([...target(), '--method', 'tools/call', '--tool-name', 'run_python',
      '--tool-arg', 'code=print(1+1)']);
    assert.equal(r.code, 0, explain(r));
    const res = r.json.result;
    assert.equal(res.isError, false);
    assert.equal(res.structuredContent.status, 'ok');
    assert.equal(res.structuredContent.exit_code, 0);
    assert.equal(res.structuredContent.stdout, '2\n');
    assert.equal(res.content[0].type, 'text');
    assert.match(res.content[0].text, /\n2\n/);
  });

  test('a failing script is isError true (exit 5)', async () => {
    const r = await inspector([...target(), '--method', 'tools/call', '--tool-name', 'run_python',
      '--tool-arg', 'code=1/0']);
    assert.equal(r.code, 5, explain(r));
    const res = r.json.result;
    assert.equal(res.isError, true);
    assert.equal(res.structuredContent.status, 'error');
    assert.equal(res.structuredContent.exit_code, 1);
    assert.equal(res.structuredContent.error.type, 'ZeroDivisionError');
    assert.match(r.stderr, /"code":"tool_is_error"/);
  });

  test('a timeout, its arguments as one JSON object', async () => {
    const r = await inspector([...target(), '--method', 'tools/call', '--tool-name', 'run_python',
      '--tool-args-json', JSON.stringify({ code: 'while True: pass', timeout_ms: 1000 })]);
    assert.equal(r.code, 5, explain(r));
    assert.equal(r.json.result.isError, true);
    assert.equal(r.json.result.structuredContent.status, 'timeout');
  });

  test('an argument the tool does not take is refused, as a tool error', async () => {
    const r = await inspector([...target(), '--method', 'tools/call', '--tool-name', 'run_python',
      '--tool-args-json', JSON.stringify({ code: 'print(1)', bogus: 1 })]);
    assert.equal(r.code, 5, explain(r));
    assert.equal(r.json.result.isError, true);
    assert.equal(r.json.result.structuredContent.error.type, 'InvalidArguments');
    assert.match(r.json.result.structuredContent.error.message, /bogus/);
  });
}

describe('pybox mcp over stdio', () => {
  toolChecks(() => [PYBOX, 'mcp', '--timeout', '20']);
});

describe("pybox serve's /mcp over Streamable HTTP", () => {
  let srv;
  before(async () => { srv = await startServer(path.join(tmp, 'open')); });
  after(async () => { if (srv) await stopServer(srv); });
  toolChecks(() => ['--transport', 'http', '--server-url', `${srv.base}/mcp`]);
});

describe('/mcp of pybox serve --mcp keyed', () => {
  let srv;
  let key;
  before(async () => {
    const dir = path.join(tmp, 'keyed');
    fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
    key = createKey(path.join(dir, 'data'), 'inspector');
    srv = await startServer(dir, ['--mcp', 'keyed']);
  });
  after(async () => { if (srv) await stopServer(srv); });
  const url = () => `${srv.base}/mcp`;

  test('without a key: auth required (exit 3), nothing run', async () => {
    const r = await inspector(['--transport', 'http', '--server-url', url(), '--stored-auth-only',
      '--method', 'tools/call', '--tool-name', 'run_python', '--tool-arg', 'code=print(1+1)']);
    assert.equal(r.code, 3, explain(r));
    assert.match(r.stderr, /"code":"auth_required"/);
    assert.doesNotMatch(r.stdout, /"stdout":"2\\n"/);
  });

  test('a wrong key: auth required (exit 3)', async () => {
    const r = await inspector(['--transport', 'http', '--server-url', url(), '--stored-auth-only',
      '--header', 'Authorization: Bearer pbx_not_a_key', '--method', 'tools/list']);
    assert.equal(r.code, 3, explain(r));
    assert.match(r.stderr, /"code":"auth_required"/);
  });

  test('its key in an Authorization header: print(1+1)', async () => {
    const r = await inspector(['--transport', 'http', '--server-url', url(), '--stored-auth-only',
      '--header', `Authorization: Bearer ${key}`, '--method', 'tools/call', '--tool-name', 'run_python',
      '--tool-arg', 'code=print(1+1)']);
    assert.equal(r.code, 0, explain(r));
    assert.equal(r.json.result.isError, false);
    assert.equal(r.json.result.structuredContent.stdout, '2\n');
  });
});
