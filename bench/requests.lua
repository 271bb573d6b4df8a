-- wrk script for one route of the Todo API benchmark.
--
--   wrk -t T -c C -d D -s bench/requests.lua http://127.0.0.1:PORT -- DATA_FILE ROUTE T
--
-- DATA_FILE is the Lua chunk that bench/run.py writes (users, tokens, task ids); ROUTE is one
-- of list, list_filtered, changes, cursor_deep, offset_deep, get, create, replace, toggle,
-- delete, login; or `path`, followed by PATH TOKEN: the same GET, again and again. Every request goes to the next user in turn (and to that user's next task),
-- each with that user's own bearer token, except the deep reads (changes, cursor_deep,
-- offset_deep), which all go to the one user with 10,000 tasks: its changes feed after a cursor
-- 100 changes behind, and the page 9,980 tasks deep in its list, by cursor or by offset. The
-- requests are built once, in init(). Each thread counts the responses by status, and
-- done() prints one line, "BENCH_RESULT {json}", that the runner reads.

local threads = {}
local thread_count = 0

function setup(thread)
   thread:set("thread_index", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

local create_body = '{"title": "Benchmark task", "description": "Made by the load benchmark", '
   .. '"priority": "high", "due_date": "2026-12-01"}'
-- Two full bodies, alternated from one round over the tasks to the next, so that a PUT
-- changes its task instead of repeating itself.
local replace_bodies = {
   '{"title": "Replaced by the benchmark", "description": "Variant A", "completed": false, '
      .. '"priority": "low", "due_date": "2026-12-01"}',
   '{"title": "Replaced by the benchmark (B)", "description": null, "completed": true, '
      .. '"priority": "high", "due_date": null}',
}

local function request_for(method, path, token, body)
   local headers = {}
   if token then
      headers["Authorization"] = "Bearer " .. token
   end
   if body then
      headers["Content-Type"] = "application/json"
   end
   return wrk.format(method, path, headers, body)
end

-- One request per user, or one per (task index, user) with the users innermost.
local function per_user(users, build)
   local requests = {}
   for _, user in ipairs(users) do
      table.insert(requests, build(user))
   end
   return requests
end

local function per_task(users, field, build)
   local requests = {}
   local most = 0
   for _, user in ipairs(users) do
      most = math.max(most, #user[field])
   end
   for index = 1, most do
      for _, user in ipairs(users) do
         local task_id = user[field][index]
         if task_id then
            table.insert(requests, build(user, task_id))
         end
      end
   end
   return requests
end

local function tasks_path(user)
   return "/api/" .. user.id .. "/tasks"
end

local function build(route, data)
   local users = data.users
   if route == "list" then
      return {per_user(users, function(user)
         return request_for("GET", tasks_path(user), user.token)
      end)}
   elseif route == "list_filtered" then
      local query = "?status=pending&q=" .. data.search .. "&priority=high"
      return {per_user(users, function(user)
         return request_for("GET", tasks_path(user) .. query, user.token)
      end)}
   elseif route == "changes" then
      local deep = data.deep
      return {{request_for("GET", "/api/" .. deep.id .. "/changes?since=" .. deep.since, deep.token)}}
   elseif route == "cursor_deep" then
      local deep = data.deep
      return {{request_for("GET", tasks_path(deep) .. "?cursor=" .. deep.cursor, deep.token)}}
   elseif route == "offset_deep" then
      local deep = data.deep
      return {{request_for("GET", tasks_path(deep) .. "?offset=" .. deep.depth, deep.token)}}
   elseif route == "get" then
      return {per_task(users, "tasks", function(user, task_id)
         return request_for("GET", tasks_path(user) .. "/" .. task_id, user.token)
      end)}
   elseif route == "create" then
      return {per_user(users, function(user)
         return request_for("POST", tasks_path(user), user.token, create_body)
      end)}
   elseif route == "replace" then
      local variants = {}
      for _, body in ipairs(replace_bodies) do
         table.insert(variants, per_task(users, "tasks", function(user, task_id)
            return request_for("PUT", tasks_path(user) .. "/" .. task_id, user.token, body)
         end))
      end
      return variants
   elseif route == "toggle" then
      return {per_task(users, "tasks", function(user, task_id)
         return request_for("PATCH", tasks_path(user) .. "/" .. task_id .. "/complete", user.token)
      end)}
   elseif route == "delete" then
      return {per_task(users, "doomed", function(user, task_id)
         return request_for("DELETE", tasks_path(user) .. "/" .. task_id, user.token)
      end)}
   elseif route == "login" then
      return {per_user(users, function(user)
         local body = '{"email": "' .. user.email .. '", "password": "' .. data.password .. '"}'
         return request_for("POST", "/api/auth/login", nil, body)
      end)}
   end
   error("unknown route: " .. tostring(route))
end

function init(args)
   local threads_total = tonumber(args[3]) or 1
   if args[2] == "path" then
      -- One fixed GET: args[4] is its path and query, args[5] the bearer token (bench/scale.py).
      variants = {{request_for("GET", args[4], args[5])}}
   else
      variants = build(args[2], dofile(args[1]))
   end
   size = #variants[1]
   -- Threads start at evenly spaced places in the rotation.
   sent = math.floor(size * thread_index / threads_total)
   statuses = {}
end

function request()
   local round = math.floor(sent / size)
   local index = sent % size + 1
   sent = sent + 1
   return variants[round % #variants + 1][index]
end

function response(status, headers, body)
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
   local counts = {}
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses") or {}) do
         counts[status] = (counts[status] or 0) + count
      end
   end
   local parts = {}
   for status, count in pairs(counts) do
      table.insert(parts, string.format('"%s": %d', status, count))
   end
   local errors = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"duration_us": %d, "requests": %d, "bytes": %d, '
         .. '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, '
         .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "mean": %.1f, '
         .. '"max": %d}, "statuses": {%s}}\n',
      summary.duration, summary.requests, summary.bytes,
      errors.connect, errors.read, errors.write, errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.mean, latency.max,
      table.concat(parts, ", ")))
end
