-- Argo CD health check for cocoon.network/CocoonWorker (and CocoonWorkerPool).
-- Install: resource.customizations.health.cocoon.network_CocoonWorker in
-- argocd-cm (see docs/gitops.md). Reads only status, which the operator owns.
local hs = { status = "Progressing", message = "waiting for the operator" }
if obj.status == nil then
  return hs
end
if obj.metadata ~= nil and obj.metadata.generation ~= nil
    and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "the operator has not seen the latest spec yet"
  return hs
end
-- A pool: healthy when every replica is Ready at the current template.
if obj.spec ~= nil and obj.spec.replicas ~= nil then
  local want = obj.spec.replicas
  local ready = obj.status.readyReplicas or 0
  local updated = obj.status.updatedReplicas or 0
  hs.message = string.format("%d/%d Ready, %d updated", ready, want, updated)
  if ready >= want and updated >= want then
    hs.status = "Healthy"
  end
  return hs
end
local conditions = {}
for _, c in ipairs(obj.status.conditions or {}) do
  conditions[c.type] = c
end
local phase = obj.status.phase or ""
if phase == "Paused" then
  hs.status = "Suspended"
  hs.message = "reconciliation is paused"
  return hs
end
if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = (conditions["Ready"] and conditions["Ready"].message) or "failed"
  return hs
end
-- Evidence that does not verify, or hashes the root contract does not list,
-- will not fix themselves: Degraded, with the operator's reason.
local attested = conditions["Attested"]
if attested ~= nil and attested.status == "False" and attested.reason == "EvidenceRejected" then
  hs.status = "Degraded"
  hs.message = attested.message
  return hs
end
local allowed = conditions["OnChainAllowed"]
if allowed ~= nil and allowed.status == "False" then
  hs.status = "Degraded"
  hs.message = allowed.message
  return hs
end
local ready = conditions["Ready"]
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end
if ready ~= nil then
  hs.message = ready.message
end
return hs
