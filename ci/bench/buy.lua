-- wrk script: POST /buy with a unique request_id per request and users spread so the per-user
-- rate limit does not trigger. Counts 202s; prints WRK_ACCEPTED / WRK_OTHER at the end.
local threads = {}
local count = 0

function setup(thread)
  count = count + 1
  thread:set("tid", count)
  table.insert(threads, thread)
end

function init(args)
  prefix = os.getenv("BENCH_PREFIX") or "wrk"
  i = 0
  accepted = 0
  others = 0
end

function request()
  i = i + 1
  local body = string.format(
    '{"user_id":"w%d-%d","item_id":"101","amount":1,"request_id":"%s-%d-%d"}',
    tid, i % 100000, prefix, tid, i)
  return wrk.format("POST", "/buy", {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  if status == 202 then accepted = accepted + 1 else others = others + 1 end
end

function done(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("accepted")
    o = o + t:get("others")
  end
  io.write(string.format("WRK_ACCEPTED %d\nWRK_OTHER %d\n", a, o))
end
