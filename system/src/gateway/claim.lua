-- The gateway's per-order Redis work: sliding-window rate limit + request_id claim.
-- KEYS: ratelimit:<user_id>, order_status:<request_id>
-- ARGV: window_ms, max_requests, unique member, status_ttl_ms, pending status
-- See claim.rs. ci/bench-gateway runs this same file under redis-benchmark.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window_ms = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window_ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local retry_ms = window_ms
  if oldest[2] then retry_ms = tonumber(oldest[2]) + window_ms - now_ms end
  return {'limited', tostring(retry_ms)}
end
redis.call('ZADD', KEYS[1], now_ms, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window_ms)
local existing = redis.call('GET', KEYS[2])
-- UNKNOWN: an earlier attempt may or may not have been queued; the retry may go again (the
-- processor gives one request_id at most one effect).
if existing and existing ~= 'UNKNOWN' then return {'duplicate', existing} end
redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[4])
return {'claimed', ''}
