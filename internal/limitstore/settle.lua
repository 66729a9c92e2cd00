-- Settles what one gateway's calls used when no admission carried it soon enough
-- (ARGV from 1, as common.lua's settle reads it). Reply: {day micros, month micros, server time s}.
local day, month = settle(1)
return {day, month, tonumber(t[1])}
