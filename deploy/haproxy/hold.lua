-- Hold a new connection while no chat-server replica is ready, instead of
-- refusing it (deploy/haproxy/haproxy.cfg, frontend chat).
--
-- When is no replica ready? Plain `docker compose up -d` with a new image stops
-- every replica before it starts any (Compose's create phase; README, "Scaling
-- out"), the stack's first start, or all replicas restarting at once. Without
-- this, HAProxy closes a connection it has no server for at once, and every
-- client that connects in that gap is turned away. With it, the connection
-- waits (its bytes stay buffered in HAProxy) until a replica is ready, up to
-- the limit given in the rule, and then goes on as usual.
--
-- "Ready" is stricter than HAProxy's own `nbsrv`: a server slot that has just
-- been filled from DNS counts as UP before its first check has run, while the
-- replica behind it may still be starting. A replica is ready here when it is
-- UP *and* its last health check passed (`/ready` answered 200, L7OK). A
-- draining replica (its `/ready` answers 503) is therefore not ready.
--
-- One task refreshes the readiness of the backends that rules ask about every
-- 100 ms, so a thousand held connections cost one scan of the servers, not a
-- thousand. Lua's sleep yields: a held connection costs no CPU and blocks no
-- other connection, and sleeping is not counted in tune.lua.session-timeout.

local POLL_MS = 100

-- backend name -> true/false, refreshed by the task below
local ready = {}

local function has_ready_server(backend)
    local px = core.backends[backend]
    if px == nil then
        return nil
    end
    for _, srv in pairs(px.servers) do
        local stats = srv:get_stats()
        local status = stats.status or ""
        if status:sub(1, 2) == "UP" and stats.check_status == "L7OK" then
            return true
        end
    end
    return false
end

core.register_task(function()
    while true do
        for backend, _ in pairs(ready) do
            ready[backend] = has_ready_server(backend) or false
        end
        core.msleep(POLL_MS)
    end
end)

-- tcp-request content lua.hold_until_ready <backend> <limit in ms>
-- (needs `tcp-request inspect-delay` of at least the limit: HAProxy lets a
-- rule wait only within the inspect delay)
core.register_action("hold_until_ready", { "tcp-req" }, function(txn, backend, limit_ms)
    local state = ready[backend]
    if state == nil then
        state = has_ready_server(backend)
        if state == nil then
            core.Alert("hold_until_ready: no backend named " .. tostring(backend))
            return
        end
        ready[backend] = state
    end
    if state then
        return
    end
    local limit = tonumber(limit_ms) or 0
    local started = core.now()
    local waited = 0
    while not ready[backend] and waited < limit do
        core.msleep(POLL_MS)
        local now = core.now()
        waited = (now.sec - started.sec) * 1000 + (now.usec - started.usec) // 1000
    end
    if ready[backend] then
        core.Info(string.format("held a new connection %d ms until a replica was ready", waited))
    else
        core.Warning(string.format("no replica ready after %d ms: passing the connection on", waited))
    end
end, 2)
