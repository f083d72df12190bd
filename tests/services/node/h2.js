// HTTP/2 demo for the tracer's integration tests: Node's http2 module over clear text with prior
// knowledge (h2c), no tracing library.
//
// node h2.js server PORT   (env DOWNSTREAM = an h2c base URL used by GET /call/<path>)
//   GET /hello: 200; GET /call/<path>: GET <path> on DOWNSTREAM over one shared session, with the
//   incoming B3/W3C headers forwarded unchanged (as a mesh app does), answered with its status;
//   a gRPC-shaped call (content-type application/grpc): reads the request messages, answers
//   x-messages messages (default 1), then trailers with grpc-status x-grpc-status (default 0).
// node h2.js client PORT CALLS_JSON
//   makes every call of CALLS_JSON ([{path, headers, grpc}]) concurrently on one session and
//   prints one JSON line: [{path, status, grpcStatus, messages}].
'use strict';

const http2 = require('http2');

const PROPAGATED = [
  'x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled', 'x-b3-flags',
  'b3', 'traceparent', 'tracestate',
];
const [mode, portArg, callsArg] = process.argv.slice(2);
const port = Number(portArg);

// One gRPC message: compressed flag, 4-byte length, payload.
function message(text) {
  const payload = Buffer.from(text);
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(payload.length, 1);
  return Buffer.concat([prefix, payload]);
}

function countMessages(buf) {
  let n = 0;
  for (let at = 0; at + 5 <= buf.length; at += 5 + buf.readUInt32BE(at + 1)) n += 1;
  return n;
}

function server() {
  // One session to the downstream, opened at the first call (and again after it failed).
  let session = null;
  const downstream = () => {
    if (!session || session.destroyed || session.closed) {
      session = http2.connect(process.env.DOWNSTREAM);
      session.on('error', () => {});
    }
    return session;
  };
  const srv = http2.createServer();
  srv.on('stream', (stream, headers) => {
    const path = headers[':path'];
    const parts = [];
    stream.on('data', (c) => parts.push(c));
    stream.on('end', () => {
      if ((headers['content-type'] || '').startsWith('application/grpc')) {
        const n = Number(headers['x-messages'] || 1);
        const code = String(headers['x-grpc-status'] || 0);
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': code }));
        for (let i = 0; i < n; i++) stream.write(message(`reply ${i}`));
        return stream.end();
      }
      if (path === '/hello') {
        stream.respond({ ':status': 200 });
        return stream.end('hello\n');
      }
      if (path.startsWith('/call/') && process.env.DOWNSTREAM) {
        const out = { ':path': '/' + path.slice('/call/'.length) };
        for (const h of PROPAGATED) if (headers[h] !== undefined) out[h] = headers[h];
        const req = downstream().request(out);
        let status = 502;
        req.on('response', (h) => { status = h[':status']; });
        req.on('error', () => {});
        req.resume();
        req.on('end', () => {
          stream.respond({ ':status': status });
          stream.end();
        });
        return req.end();
      }
      stream.respond({ ':status': 404 });
      return stream.end();
    });
  });
  srv.listen(port, '127.0.0.1', () => console.log(`listening on ${port}`));
}

function client() {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  const calls = JSON.parse(callsArg);
  Promise.all(calls.map((c) => new Promise((resolve) => {
    const headers = { ':path': c.path, ...c.headers };
    if (c.grpc) {
      headers[':method'] = 'POST';
      headers['content-type'] = 'application/grpc';
      headers.te = 'trailers';
    }
    const req = session.request(headers);
    const result = { path: c.path, status: 0, grpcStatus: null, messages: 0 };
    const parts = [];
    req.on('response', (h) => { result.status = h[':status']; });
    req.on('trailers', (t) => { result.grpcStatus = t['grpc-status']; });
    req.on('data', (d) => parts.push(d));
    req.on('end', () => {
      if (c.grpc) result.messages = countMessages(Buffer.concat(parts));
      resolve(result);
    });
    if (c.grpc) req.write(message('request'));
    req.end();
  }))).then((results) => {
    console.log(JSON.stringify(results));
    session.close();
  });
}

if (mode === 'server') server();
else if (mode === 'client') client();
else throw new Error(`usage: node h2.js server|client PORT [CALLS_JSON]`);
