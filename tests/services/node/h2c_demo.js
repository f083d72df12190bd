// Plain HTTP/2 over clear text (h2c, prior knowledge) with Node's built-in http2 module, for the
// tracer's integration tests; no tracing library.
//
//   node h2c_demo.js server PORT      (env DOWNSTREAM = h2c base URL used by /call/<path>)
//     GET /hello -> 200 "hello"; GET /status/NNN -> NNN; GET /headers -> the request headers as
//     JSON; GET /call/<path> -> GET DOWNSTREAM/<path> on one kept h2c session, forwarding the
//     incoming B3/W3C headers unchanged (like the HTTP/1 services), answering its status.
//   node h2c_demo.js client --url http://HOST:PORT/PATH [--header k=v ...] [--repeat K]
//                           [--interval-ms MS]
//     K requests (0: until SIGTERM) on one HTTP/2 connection, one JSON line each:
//     {"request":I,"status":CODE,"body":"..."}, then `client done: K requests`; `{seq}` in a header
//     value becomes the request number as 8 hex digits.
'use strict';

const http2 = require('http2');

const PROPAGATED = [
  'x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled', 'x-b3-flags',
  'b3', 'traceparent', 'tracestate',
];

// GET `path` on `session`; resolves to { status, body }.
function get(session, path, headers) {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':method': 'GET', ':path': path, ...headers });
    let status = 0;
    const parts = [];
    req.on('response', (h) => { status = h[':status']; });
    req.on('data', (c) => parts.push(c));
    req.on('end', () => resolve({ status, body: Buffer.concat(parts).toString() }));
    req.on('error', reject);
    req.end();
  });
}

function server(port) {
  const down = (process.env.DOWNSTREAM || '').replace(/\/$/, '');
  let session = null;
  const downstream = () => {
    if (!session || session.closed || session.destroyed) {
      const s = http2.connect(down);
      // A failed session fails its pending requests (answered 502); the next call reconnects.
      s.on('error', () => { if (session === s) session = null; });
      session = s;
    }
    return session;
  };
  const srv = http2.createServer();
  srv.on('stream', (stream, headers) => {
    const reply = (code, body) => {
      stream.respond({ ':status': code, 'content-type': 'text/plain' });
      stream.end(body);
    };
    const path = String(headers[':path']).split('?')[0];
    stream.resume(); // drain any request body
    if (headers[':method'] !== 'GET') return reply(404, 'not found\n');
    if (path === '/hello') return reply(200, 'hello\n');
    if (path === '/headers') {
      const plain = Object.fromEntries(Object.entries(headers).filter(([k]) => !k.startsWith(':')));
      return reply(200, JSON.stringify(plain));
    }
    if (path.startsWith('/status/')) {
      const code = Number(path.slice('/status/'.length));
      if (!Number.isInteger(code) || code < 200 || code > 599) return reply(400, 'bad status code\n');
      return reply(code, `status ${code}\n`);
    }
    if (path.startsWith('/call/')) {
      if (!down) return reply(500, 'DOWNSTREAM not set\n');
      const fwd = {};
      for (const h of PROPAGATED) if (headers[h] !== undefined) fwd[h] = headers[h];
      return get(downstream(), '/' + path.slice('/call/'.length), fwd)
        .then((r) => reply(r.status, r.body), (e) => reply(502, `${e.message}\n`));
    }
    return reply(404, 'not found\n');
  });
  srv.listen(port, '127.0.0.1', () => console.log(`listening on ${port}`));
}

async function client(argv) {
  const a = { url: '', headers: [], repeat: 1, intervalMs: 0 };
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (v === undefined) { console.error(`client: ${k} needs a value`); process.exit(2); }
    if (k === '--url') a.url = v;
    else if (k === '--header') a.headers.push(v);
    else if (k === '--repeat') a.repeat = Number(v);
    else if (k === '--interval-ms') a.intervalMs = Number(v);
    else { console.error(`client: unknown option ${k}`); process.exit(2); }
  }
  if (!a.url) { console.error('client: --url is needed'); process.exit(2); }
  const url = new URL(a.url);
  const session = http2.connect(url.origin);
  session.on('error', (e) => { console.error(`client: ${e.message}`); process.exit(1); });
  let stop = false;
  let wake = () => {};
  process.on('SIGTERM', () => { stop = true; wake(); });
  let done = 0;
  for (let i = 1; a.repeat === 0 || i <= a.repeat; i++) {
    if (i > 1 && a.intervalMs) await new Promise((r) => { wake = r; setTimeout(r, a.intervalMs); });
    if (stop) break;
    const headers = {};
    for (const kv of a.headers) {
      const j = kv.indexOf('=');
      headers[kv.slice(0, j).toLowerCase()] = kv.slice(j + 1).replaceAll('{seq}', i.toString(16).padStart(8, '0'));
    }
    const r = await get(session, url.pathname + url.search, headers);
    console.log(JSON.stringify({ request: i, status: r.status, body: r.body }));
    done = i;
  }
  console.log(`client done: ${done} requests`);
  session.close();
}

if (process.argv[2] === 'server' && process.argv[3]) server(Number(process.argv[3]));
else if (process.argv[2] === 'client') client(process.argv.slice(3));
else { console.error('usage: node h2c_demo.js server PORT | node h2c_demo.js client --url URL ...'); process.exit(2); }
