-- wrk script: POST pre-signed deliveries, each with its own event id.
-- BODIES (environment): a file of lines "signature<TAB>body" (bench/_common.py write_body_file).
-- Thread k of n sends lines k, k+n, k+2n, ...; running out wraps around and is counted, so
-- the caller can tell whether any event id was sent twice (a dedupe hit in the daemon).
local counter = 0
local threads = {}

function setup(thread)
  thread:set("tid", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

function init(args)
  local n = tonumber(os.getenv("WRK_THREADS") or "1")
  bodies = {}
  local i = 0
  for line in io.lines(os.getenv("BODIES")) do
    if i % n == tid then
      local tab = line:find("\t", 1, true)
      bodies[#bodies + 1] = { line:sub(1, tab - 1), line:sub(tab + 1) }
    end
    i = i + 1
  end
  idx = 0
  wraps = 0
end

function request()
  idx = idx + 1
  if idx > #bodies then
    idx = 1
    wraps = wraps + 1
  end
  local b = bodies[idx]
  return wrk.format("POST", "/webhooks", {
    ["Content-Type"] = "application/json",
    ["x-twitter-webhooks-signature"] = b[1],
  }, b[2])
end

function done(summary, latency, requests)
  local w = 0
  for _, thread in ipairs(threads) do
    w = w + (thread:get("wraps") or 0)
  end
  io.write(string.format("WRAPS %d\n", w))
end
