// Demo HTTP service for the tracer's integration tests: Node's http module, no tracing library.
//
// Usage: node server.js [PORT]   (else env PORT); env DOWNSTREAM = base URL used by /call/<path>.
// Like a mesh app, /call forwards the incoming B3/W3C headers unchanged to the downstream request.
'use strict';

const http = require('http');

const PROPAGATED = [
  'x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled', 'x-b3-flags',
  'b3', 'traceparent', 'tracestate',
];
const port = Number(process.argv[2] || process.env.PORT);
const downstream = process.env.DOWNSTREAM || '';

function reply(res, code, body, headers = {}) {
  if (code === 204 || code === 304) {
    res.writeHead(code, headers); // no body, no Content-Length
    return res.end();
  }
  const buf = Buffer.from(body);
  res.writeHead(code, { ...headers, 'Content-Length': buf.length });
  return res.end(buf);
}

function call(req, res, rest) {
  if (!downstream) return reply(res, 500, 'DOWNSTREAM not set\n');
  const headers = {};
  for (const h of PROPAGATED) {
    if (req.headers[h] !== undefined) headers[h] = req.headers[h];
  }
  const out = http.get(downstream.replace(/\/$/, '') + '/' + rest, { headers }, (dres) => {
    const parts = [];
    dres.on('data', (c) => parts.push(c));
    dres.on('end', () => reply(res, dres.statusCode, Buffer.concat(parts)));
  });
  out.on('error', (e) => reply(res, 502, `${e.message}\n`));
}

const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (req.method === 'POST' && path === '/echo') {
    // Node decodes Content-Length and chunked request bodies alike.
    const parts = [];
    req.on('data', (c) => parts.push(c));
    req.on('end', () => reply(res, 200, Buffer.concat(parts)));
    return;
  }
  req.resume(); // drain any body so keep-alive continues
  if (req.method !== 'GET') return reply(res, 404, 'not found\n');
  if (path === '/hello') return reply(res, 200, 'hello\n');
  // What the caller (e.g. a sidecar) sent, as JSON; Node lowercases header names.
  if (path === '/headers') return reply(res, 200, JSON.stringify(req.headers));
  if (path.startsWith('/status/')) {
    const code = Number(path.slice('/status/'.length));
    if (!Number.isInteger(code) || code < 200 || code > 599) return reply(res, 400, 'bad status code\n');
    return reply(res, code, code === 204 || code === 304 ? '' : `status ${code}\n`);
  }
  if (path === '/chunked') {
    // No Content-Length: Node sends Transfer-Encoding: chunked, one chunk per write.
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    for (let i = 0; i < 4; i++) res.write(`chunk ${i}\n`);
    return res.end();
  }
  if (path === '/setcookie') return reply(res, 200, 'cookie set\n', { 'Set-Cookie': 'id=s3cr3t-set-cookie' });
  if (path.startsWith('/call/')) return call(req, res, req.url.slice('/call/'.length));
  return reply(res, 404, 'not found\n');
});

server.listen(port, '127.0.0.1', () => console.log(`listening on ${port}`));
