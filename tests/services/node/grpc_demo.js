// gRPC demo service and client for the tracer's integration tests: Node @grpc/grpc-js, no
// tracing library, no .proto: the service definition is written by hand with identity
// (de)serializers, so messages are raw bytes and the wire is plain `application/grpc`.
//   - SayHello (unary): NAME -> "hello NAME"; `missing` -> NOT_FOUND, `fail` -> INTERNAL,
//     `metadata` -> the metadata the call arrived with, one "key=value" line each (sorted);
//   - Count (server streaming): N (decimal) -> N messages "1" .. "N".
// Like a mesh app, with DOWNSTREAM set each call first makes the same call downstream
// (`grpc://HOST:PORT`) or a GET (`http://...`), forwarding the incoming B3/W3C headers as
// outgoing metadata; a downstream failure is answered with the downstream's status, and a
// SayHello with a gRPC downstream is answered with the downstream's reply (so `metadata` shows
// what reached the last hop of a chain).
//
// @grpc/grpc-js is installed by `cargo xtask setup` into target/tools/node/node_modules: run with
// NODE_PATH pointing there.
//   node grpc_demo.js server PORT      (env DOWNSTREAM)
//   node grpc_demo.js client --target HOST:PORT --method SayHello|Count [--name X] [--count N]
//                            [--metadata k=v ...] [--repeat K] [--interval-ms MS]
// The client makes K calls (0: until SIGTERM) on one channel (one HTTP/2 connection) and prints
// one JSON line per call: {"call":I,"status":CODE,"message":"...","responses":["..."]}, then
// `client done: K calls`; `{seq}` in a metadata value becomes the call number as 8 hex digits.
'use strict';

const http = require('http');
const grpc = require('@grpc/grpc-js');

const PROPAGATED = [
  'x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled', 'x-b3-flags',
  'b3', 'traceparent', 'tracestate',
];
const raw = { serialize: (b) => b, deserialize: (b) => b };
const SERVICE = {
  SayHello: {
    path: '/demo.Greeter/SayHello', requestStream: false, responseStream: false,
    requestSerialize: raw.serialize, requestDeserialize: raw.deserialize,
    responseSerialize: raw.serialize, responseDeserialize: raw.deserialize,
  },
  Count: {
    path: '/demo.Greeter/Count', requestStream: false, responseStream: true,
    requestSerialize: raw.serialize, requestDeserialize: raw.deserialize,
    responseSerialize: raw.serialize, responseDeserialize: raw.deserialize,
  },
};
const Client = grpc.makeGenericClientConstructor(SERVICE, 'demo.Greeter');

// The application metadata of a call, one sorted "key=value" line each.
function describe(md) {
  const lines = [];
  for (const [k, vs] of Object.entries(md.getMap())) {
    if (k.startsWith(':') || k.startsWith('grpc-') || ['user-agent', 'content-type', 'te', 'accept-encoding'].includes(k)) continue;
    for (const v of md.get(k)) lines.push(`${k}=${v}`);
  }
  return lines.sort().join('\n');
}

// ---- server ----

function server(port) {
  const down = process.env.DOWNSTREAM || '';
  const client = down.startsWith('grpc://')
    ? new Client(down.slice('grpc://'.length), grpc.credentials.createInsecure()) : null;

  // Makes the call's downstream call, if any; `done(err, reply)` gets a gRPC error or null, and a
  // gRPC downstream's SayHello reply.
  function downstream(call, method, request, done) {
    const md = new grpc.Metadata();
    const headers = {};
    for (const h of PROPAGATED) {
      const v = call.metadata.get(h);
      if (v.length) { md.set(h, v[0]); headers[h] = v[0]; }
    }
    if (client) {
      if (method === 'Count') {
        const s = client.Count(request, md, { deadline: Date.now() + 10000 });
        s.on('data', () => {});
        s.on('error', (e) => done(e));
        s.on('end', () => {});
        s.on('status', (st) => { if (st.code === 0) done(null); });
      } else {
        client.SayHello(request, md, { deadline: Date.now() + 10000 }, (e, reply) => done(e || null, reply));
      }
    } else if (down) {
      http.get(down, { headers }, (res) => {
        res.resume();
        res.on('end', () => done(res.statusCode >= 400
          ? { code: grpc.status.INTERNAL, details: `downstream answered HTTP ${res.statusCode}` } : null));
      }).on('error', (e) => done({ code: grpc.status.UNAVAILABLE, details: e.message }));
    } else {
      done(null);
    }
  }

  const impl = {
    SayHello(call, callback) {
      downstream(call, 'SayHello', call.request, (err, reply) => {
        if (err) return callback({ code: err.code, details: err.details });
        if (reply) return callback(null, reply);
        const name = call.request.toString();
        if (name === 'missing') return callback({ code: grpc.status.NOT_FOUND, details: 'no greeting for missing' });
        if (name === 'fail') return callback({ code: grpc.status.INTERNAL, details: 'greeting failed' });
        if (name === 'metadata') return callback(null, Buffer.from(describe(call.metadata)));
        return callback(null, Buffer.concat([Buffer.from('hello '), call.request]));
      });
    },
    Count(call) {
      downstream(call, 'Count', call.request, (err) => {
        if (err) return call.emit('error', { code: err.code, details: err.details });
        const n = Number(call.request.toString());
        if (!Number.isInteger(n) || n < 0) {
          return call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: 'count is not a number' });
        }
        for (let i = 1; i <= n; i++) call.write(Buffer.from(String(i)));
        return call.end();
      });
    },
  };
  const srv = new grpc.Server();
  srv.addService(SERVICE, impl);
  srv.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
    if (err) { console.error(err.message); process.exit(1); }
    console.log(`listening on ${port}`);
  });
}

// ---- client ----

function parseArgs(argv) {
  const a = { target: '', method: 'SayHello', name: 'world', count: 3, metadata: [], repeat: 1, intervalMs: 0 };
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (v === undefined) throw new Error(`${k} needs a value`);
    if (k === '--target') a.target = v;
    else if (k === '--method') a.method = v;
    else if (k === '--name') a.name = v;
    else if (k === '--count') a.count = Number(v);
    else if (k === '--metadata') a.metadata.push(v);
    else if (k === '--repeat') a.repeat = Number(v);
    else if (k === '--interval-ms') a.intervalMs = Number(v);
    else throw new Error(`unknown option ${k}`);
  }
  if (!a.target || !['SayHello', 'Count'].includes(a.method)) throw new Error('--target HOST:PORT and --method SayHello|Count are needed');
  return a;
}

function call(client, a, seq) {
  const md = new grpc.Metadata();
  for (const kv of a.metadata) {
    const j = kv.indexOf('=');
    const [k, v] = j < 0 ? [kv, ''] : [kv.slice(0, j), kv.slice(j + 1)];
    md.add(k, v.replaceAll('{seq}', seq.toString(16).padStart(8, '0')));
  }
  const opts = { deadline: Date.now() + 10000 };
  return new Promise((resolve) => {
    const result = { call: seq, status: 0, message: '', responses: [] };
    if (a.method === 'Count') {
      const s = client.Count(Buffer.from(String(a.count)), md, opts);
      s.on('data', (m) => result.responses.push(m.toString()));
      s.on('error', () => {});
      s.on('status', (st) => { result.status = st.code; result.message = st.code ? st.details : ''; resolve(result); });
    } else {
      client.SayHello(Buffer.from(a.name), md, opts, (err, reply) => {
        if (err) { result.status = err.code; result.message = err.details; } else result.responses.push(reply.toString());
        resolve(result);
      });
    }
  });
}

async function client(argv) {
  let a;
  try { a = parseArgs(argv); } catch (e) { console.error(`client: ${e.message}`); process.exit(2); }
  const c = new Client(a.target, grpc.credentials.createInsecure());
  let stop = false;
  let wake = () => {};
  process.on('SIGTERM', () => { stop = true; wake(); });
  let calls = 0;
  for (let i = 1; a.repeat === 0 || i <= a.repeat; i++) {
    if (i > 1 && a.intervalMs) await new Promise((r) => { wake = r; setTimeout(r, a.intervalMs); });
    if (stop) break;
    console.log(JSON.stringify(await call(c, a, i)));
    calls = i;
  }
  console.log(`client done: ${calls} calls`);
  c.close();
}

if (process.argv[2] === 'server' && process.argv[3]) server(Number(process.argv[3]));
else if (process.argv[2] === 'client') client(process.argv.slice(3));
else { console.error('usage: node grpc_demo.js server PORT | node grpc_demo.js client --target HOST:PORT ...'); process.exit(2); }
