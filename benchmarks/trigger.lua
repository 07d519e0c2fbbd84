-- wrk script: POST /v2/jobs/{id}/trigger round-robin over the job ids in JOB_IDS
-- (comma separated, from the environment).
local ids = {}
for id in string.gmatch(os.getenv("JOB_IDS") or "", "([^,]+)") do ids[#ids + 1] = id end
local sent = 0

request = function()
  sent = sent + 1
  return wrk.format("POST", "/v2/jobs/" .. ids[(sent % #ids) + 1] .. "/trigger")
end
