-- Argo CD health of a voiceagent.dev VoiceAgent.
-- Healthy: Ready=True for the current generation.
-- Progressing: no status yet, the operator has not observed the latest spec, or a
--   condition is waiting on something that resolves by itself (rollout, sync, issuance).
-- Degraded: a condition is False for a reason that needs a person; the message is that
--   condition's own message, which says what to do.
local hs = {}
local waiting = {
  DeploymentUnavailable = true,
  ExternalSecretNotSynced = true,
  CertificateNotReady = true,
  SinkNotReady = true,
}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (obj.status.observedGeneration == nil or obj.status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "The operator has not yet observed generation " .. generation
  return hs
end
local ready = nil
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    ready = c
  end
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end
local order = { "CredentialsReady", "CertificateReady", "NetworkIsolated", "AuditReady", "Available" }
for _, t in ipairs(order) do
  for _, c in ipairs(obj.status.conditions) do
    if c.type == t and c.status ~= "True" then
      local message = t .. ": " .. (c.message or c.reason or "not ready")
      if c.status == "False" and not waiting[c.reason] then
        hs.status = "Degraded"
      else
        hs.status = "Progressing"
      end
      hs.message = message
      return hs
    end
  end
end
hs.status = "Progressing"
hs.message = (ready and ready.message) or "Waiting for the Ready condition"
return hs
