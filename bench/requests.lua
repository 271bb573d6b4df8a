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
   elseif route == "mixed" then
      -- The soak's load (bench/soak.py): each user in turn goes through 22 steps, 14 reads and
      -- 8 writes, one step for every user before the next step. Four variants (one a round)
      -- address other tasks and bodies. Run it on ONE wrk thread: the writes to a task are
      -- then issued in order, hundreds of requests apart. Every round, the task a user creates
      -- (a client-chosen id) is first deleted and purged from the trash, and a task deleted is
      -- restored later in the round, so that whatever round wrk stopped in, the next run (which
      -- starts at the first step again) gets no 404 or 409, and the data stays the same size.
      local patch_bodies = {'{"priority": "medium", "due_date": "2026-12-24"}',
         '{"priority": "low", "due_date": null, "description": "Patched by the soak"}'}
      local deep = data.deep
      local variants = {}
      for v = 1, 4 do
         local half = math.floor((v - 1) / 2) + 1   -- 1, 1, 2, 2: the body of PATCH and PUT
         local other = (v - 1) % 2                  -- 0, 1, 0, 1: which of two tasks
         local function created(index)
            return string.format("50a50000-0000-4000-8000-%012d", index * 10 + v)
         end
         local create = '{"id": "%s", "title": "Soak task %d", "priority": "high", '
            .. '"due_date": "2026-12-01", "tags": ["soak", "errands"]}'
         local steps = {
            function(u) return "GET", tasks_path(u) end,
            function(u, i) return "DELETE", tasks_path(u) .. "/" .. created(i) end,
            function(u) return "GET", tasks_path(u) .. "/" .. u.tasks[v] end,
            function(u) return "GET", tasks_path(u) .. "?status=pending&sort=due_date" end,
            function(u, i) return "DELETE", "/api/" .. u.id .. "/trash/" .. created(i) end,
            function(u) return "GET", "/api/" .. u.id .. "/changes?limit=50" end,
            function(u, i) return "POST", tasks_path(u), string.format(create, created(i), v) end,
            function(u) return "GET", tasks_path(u) .. "?q=" .. data.search end,
            function(u) return "PATCH", tasks_path(u) .. "/" .. u.tasks[5 + other], patch_bodies[half] end,
            function(u, i) return "GET", tasks_path(u) .. "/" .. created(i) end,
            function(u) return "GET", tasks_path(u) .. "?sort=title&limit=50" end,
            function(u) return "PATCH", tasks_path(u) .. "/" .. u.tasks[8 + v] .. "/complete" end,
            function(u) return "GET", tasks_path(u) .. "?tag=soak" end,
            function(u) return "DELETE", tasks_path(u) .. "/" .. u.doomed[v] end,
            function(u) return "GET", tasks_path(u) .. "?offset=20" end,
            function(u) return "PUT", tasks_path(u) .. "/" .. u.tasks[13 + other], replace_bodies[half] end,
            function(u) return "GET", tasks_path(u) .. "?view=upcoming" end,
            function(u) return "GET", "/api/" .. u.id .. "/tags" end,
            function(u) return "POST", "/api/" .. u.id .. "/trash/" .. u.doomed[v] .. "/restore" end,
            function(u, i)  -- the user with 10,000 tasks: a client catching up, a deep page
               if deep == nil then return "GET", tasks_path(u) .. "?limit=100" end
               if i % 2 == 1 then
                  return "GET", "/api/" .. deep.id .. "/changes?since=" .. deep.since, nil, deep
               end
               return "GET", tasks_path(deep) .. "?cursor=" .. deep.cursor, nil, deep
            end,
            function(u) return "GET", tasks_path(u) .. "?priority=high&status=completed&sort=-due_date" end,
            function(u) return "GET", tasks_path(u) .. "/" .. u.tasks[16 + v] end,
         }
         local requests = {}
         for _, step in ipairs(steps) do
            for index, user in ipairs(users) do
               local method, path, body, as = step(user, index)
               table.insert(requests, request_for(method, path, (as or user).token, body))
            end
         end
         table.insert(variants, requests)
      end
      return variants
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
