-- wrk script of `cargo xtask bench`. Every request carries B3 headers with a fresh random trace
-- and span id, so the agent parses a real context per request. The first 8 hex digits of each
-- 64-bit trace id are the run's tag (args[1]): the bench counts exactly this run's spans by it.
-- Headers given with -H (Connection: close) are kept. One machine-readable line at the end.

local headers = {}
local tag = "00000000"
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end

function init(args)
  tag = args[1]
  -- Each thread has its own Lua state, all with the same default seed.
  math.randomseed(tonumber(args[2]) * 64 + thread_no)
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
end

local function hex4()
  return string.format("%04x", math.random(0, 65535))
end

function request()
  headers["x-b3-traceid"] = tag .. hex4() .. hex4()
  headers["x-b3-spanid"] = hex4() .. hex4() .. hex4() .. string.format("%04x", math.random(1, 65535))
  headers["x-b3-sampled"] = "1"
  return wrk.format(nil, nil, headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
end
