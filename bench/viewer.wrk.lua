-- The load of bench/viewer.bench.ts when wrk is installed: keep-alive GETs of a random patient's
-- path with the bench physician's bearer token. Arguments after `--`: token, path template
-- (`{p}` is replaced by the patient number), number of patients.
-- At the end one JSON line on stdout: requests, errors, bytes and latency percentiles in ms.
local token, template, patients

function init(args)
  token = args[1]
  template = args[2]
  patients = tonumber(args[3])
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
end

function request()
  local path = template:gsub("{p}", tostring(math.random(1, patients)))
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. token })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"micros":%d,"bytes":%d,"non2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"p50":%f,"p95":%f,"p99":%f,"max":%f}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
