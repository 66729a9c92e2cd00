-- Shared by admit.lua and settle.lua (prepended to each). Time is the server's, so
-- that the gateway replicas' clocks do not matter.
--
-- KEYS (both scripts): 1 requests bucket, 2 tokens-per-minute bucket, 3 call leases,
-- 4 session leases, 5 sessions-per-minute bucket, 6 day spend, 7 month spend (hashes:
-- each gateway's own figure by its id, and the VoiceAgent's total in field "=total", so
-- that an evicted or lost hash goes all at once and is refilled as a whole).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000

-- level is a token bucket's content now; a missing key is a full bucket.
local function level(key, rate, burst)
  local v = redis.call('HMGET', key, 'v', 'ts')
  local tokens, ts = tonumber(v[1]), tonumber(v[2])
  if tokens == nil or ts == nil then return burst end
  if now > ts then tokens = tokens + (now - ts) * rate / 1000 end
  if tokens > burst then tokens = burst end
  return tokens
end

local function keep(key, tokens, rate, burst)
  redis.call('HSET', key, 'v', string.format('%.17g', tokens), 'ts', string.format('%.17g', now))
  -- a full bucket is the same as no key: let it go once refilled
  redis.call('PEXPIRE', key, math.ceil((burst - tokens) * 1000 / rate) + 1000)
end

-- own records one gateway's own spend of a period as an absolute figure: re-sending
-- it is harmless, and a store that lost its data is refilled by every live gateway's
-- next settle. It returns the period's total.
local function own(key, owner, abs, ttl)
  local old = tonumber(redis.call('HGET', KEYS[key], owner) or '0')
  local sum
  if abs > old then
    redis.call('HSET', KEYS[key], owner, abs)
    sum = redis.call('HINCRBY', KEYS[key], '=total', abs - old)
    redis.call('EXPIRE', KEYS[key], ttl)
  else
    sum = tonumber(redis.call('HGET', KEYS[key], '=total') or '0')
  end
  return sum
end

-- settle applies what one gateway's calls used since it last settled, from ARGV[i]:
-- tokens, token rate/s, token burst, owner, its day spend, its month spend (micros,
-- absolute), day ttl s, month ttl s, lease ttl ms, call leases renewed, session leases
-- renewed, call leases released, session leases released, then the lease ids in that
-- order. Renewed leases of calls still running are put back even if they expired
-- meanwhile: the calls are real. It returns the day's and month's spend.
local function settle(i)
  local tokens, tok_rate, tok_burst = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if tokens > 0 and tok_rate > 0 then
    keep(KEYS[2], level(KEYS[2], tok_rate, tok_burst) - tokens, tok_rate, tok_burst)
  end
  local owner = ARGV[i + 3]
  local day = own(6, owner, tonumber(ARGV[i + 4]), ARGV[i + 6])
  local month = own(7, owner, tonumber(ARGV[i + 5]), ARGV[i + 7])
  local ttl = tonumber(ARGV[i + 8])
  local j = i + 13
  for k = 0, 1 do
    local n = tonumber(ARGV[i + 9 + k])
    for _ = 1, n do redis.call('ZADD', KEYS[3 + k], now + ttl, ARGV[j]); j = j + 1 end
    if n > 0 then redis.call('PEXPIRE', KEYS[3 + k], 2 * ttl) end
  end
  for k = 0, 1 do
    for _ = 1, tonumber(ARGV[i + 11 + k]) do redis.call('ZREM', KEYS[3 + k], ARGV[j]); j = j + 1 end
  end
  return day, month
end
