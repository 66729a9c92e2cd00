-- Admits one call or session against the VoiceAgent's limits, for every gateway
-- replica at once: all checks pass or nothing is taken. It first settles what this
-- gateway's earlier calls used (ARGV from 14), so that its own spend counts before
-- its next call, in the same round trip.
--
-- ARGV: 1 request rate/s, 2 request burst, 3 token rate/s, 4 token burst, 5 lease set
--       (0 none, 1 calls, 2 sessions), 6 lease max, 7 lease id, 8 lease ttl ms,
--       9 session rate/s, 10 session burst, 11 daily budget micros, 12 monthly budget
--       micros, 13 block (1 or 0), 14... the settlement
-- Reply: {code, retry ms, day micros, month micros, server time s}; code 0 admitted, 1 requests,
--        2 tokens per minute, 3 sessions per minute, 4 lease set full, 5 budget
local day, month = settle(14)

local req_rate, req_burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tok_rate, tok_burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local lease_set, lease_max, lease_ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[8])
local sr_rate, sr_burst = tonumber(ARGV[9]), tonumber(ARGV[10])
local daily, monthly, block = tonumber(ARGV[11]), tonumber(ARGV[12]), ARGV[13] == '1'

local req_level, sr_level
if req_rate > 0 then
  req_level = level(KEYS[1], req_rate, req_burst)
  if req_level < 1 then return {1, math.ceil((1 - req_level) * 1000 / req_rate), day, month, tonumber(t[1])} end
end
if tok_rate > 0 then
  local tok_level = level(KEYS[2], tok_rate, tok_burst)
  if tok_level < 0 then return {2, math.ceil(-tok_level * 1000 / tok_rate), day, month, tonumber(t[1])} end
end
if sr_rate > 0 then
  sr_level = level(KEYS[5], sr_rate, sr_burst)
  if sr_level < 1 then return {3, math.ceil((1 - sr_level) * 1000 / sr_rate), day, month, tonumber(t[1])} end
end
local lease_key = KEYS[2 + lease_set]
if lease_set > 0 and lease_max > 0 then
  redis.call('ZREMRANGEBYSCORE', lease_key, '-inf', now)
  if redis.call('ZCARD', lease_key) >= lease_max then return {4, 1000, day, month, tonumber(t[1])} end
end
if block and ((daily > 0 and day >= daily) or (monthly > 0 and month >= monthly)) then
  return {5, 0, day, month, tonumber(t[1])}
end

if req_rate > 0 then keep(KEYS[1], req_level - 1, req_rate, req_burst) end
if sr_rate > 0 then keep(KEYS[5], sr_level - 1, sr_rate, sr_burst) end
if lease_set > 0 and lease_max > 0 then
  redis.call('ZADD', lease_key, now + lease_ttl, ARGV[7])
  redis.call('PEXPIRE', lease_key, 2 * lease_ttl)
end
return {0, 0, day, month, tonumber(t[1])}
