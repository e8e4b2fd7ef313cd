-- Wireshark dissector for tunlab's own wire formats.
--
--   tunlab02  step 02's plaintext tunnel: a 4-byte header (version 1, type
--             Data/Ping/Pong, two reserved bytes) and, in a Data message,
--             the inner IP packet. Over UDP one datagram is one message;
--             over TCP each message is framed by a 2-byte length.
--   tunlab04  step 04's encrypted tunnel (also steps 05 and 06's VPN): a
--             132-byte handshake initiation, a 76-byte response and data
--             messages in WireGuard's shape (type, 3 reserved bytes, 32-bit
--             indices and a 64-bit counter, little-endian).
--   tunlab06  step 06's control connection over TCP: records with a 2-byte
--             length; the first record each way is step 04's initiation or
--             response, every later one a sealed frame whose counter is
--             its position in the stream.
--
-- Real WireGuard (step 07, wireguard-go, boringtun) uses port 51820 too:
-- messages of WireGuard's sizes (148-byte initiation, 92-byte response,
-- 64-byte cookie reply), and data messages of a conversation that has not
-- shown a step 04 handshake, go to Wireshark's own WireGuard dissector.
--
-- Install: scripts/install-dissector.sh (copies this file to
-- ~/.local/lib/wireshark/plugins/), or use it once with
--   tshark -X lua_script:wireshark/tunlab.lua -r pcaps/step04/underlay.pcap
-- The ports are preferences (Edit > Preferences > Protocols > TUNLAB04 ...).
--
-- Byte layouts: steps/step02-plain-tunnel/src/wire.rs,
-- steps/step04-crypto/src/wire.rs, steps/step06-localhost/src/secure.rs.

local DEFAULT_TUNNEL_PORT = 51820
local DEFAULT_CONTROL_PORT = 7835

local ip_dissector = Dissector.get("ip")
local ipv6_dissector = Dissector.get("ipv6")
local wg_ok, wg_dissector = pcall(Dissector.get, "wg")
if not wg_ok then wg_dissector = nil end

-- The inner IP packet, by its version nibble.
local function dissect_inner(tvb, pinfo, tree)
    if tvb:len() == 0 then return end
    local version = bit.rshift(tvb(0, 1):uint(), 4)
    if version == 4 and ip_dissector then
        ip_dissector:call(tvb, pinfo, tree)
    elseif version == 6 and ipv6_dissector then
        ipv6_dissector:call(tvb, pinfo, tree)
    end
end

---------------------------------------------------------------------------
-- Step 02
---------------------------------------------------------------------------

local p02 = Proto("tunlab02", "tunlab step 02 plaintext tunnel")
local types02 = { [1] = "Data", [2] = "Ping", [3] = "Pong" }
local f02 = {
    length = ProtoField.uint16("tunlab02.frame_length", "Frame length", base.DEC),
    version = ProtoField.uint8("tunlab02.version", "Version", base.DEC),
    type = ProtoField.uint8("tunlab02.type", "Type", base.DEC, types02),
    reserved = ProtoField.bytes("tunlab02.reserved", "Reserved"),
    payload_len = ProtoField.uint16("tunlab02.payload_length", "Inner packet length", base.DEC),
}
p02.fields = f02
local e02_bad = ProtoExpert.new("tunlab02.bad", "Not a valid step 02 message",
    expert.group.MALFORMED, expert.severity.ERROR)
p02.experts = { e02_bad }

-- One step 02 message (no framing).
local function dissect_message02(tvb, pinfo, tree)
    local subtree = tree:add(p02, tvb())
    if tvb:len() < 4 then
        subtree:add_proto_expert_info(e02_bad, "shorter than the 4-byte header")
        return
    end
    local kind = tvb(1, 1):uint()
    subtree:add(f02.version, tvb(0, 1))
    subtree:add(f02.type, tvb(1, 1))
    subtree:add(f02.reserved, tvb(2, 2))
    local name = types02[kind] or string.format("Unknown type %d", kind)
    subtree:append_text(", " .. name)
    pinfo.cols.protocol = "TUNLAB02"
    if kind == 1 then
        subtree:add(f02.payload_len, tvb(4), tvb:len() - 4)
        pinfo.cols.info:set(string.format("Data, %d bytes inside", tvb:len() - 4))
        if tvb:len() > 4 then dissect_inner(tvb(4):tvb(), pinfo, tree) end
        pinfo.cols.protocol = "TUNLAB02"
    else
        pinfo.cols.info:set(name)
    end
end

---------------------------------------------------------------------------
-- Step 04
---------------------------------------------------------------------------

local p04 = Proto("tunlab04", "tunlab step 04 encrypted tunnel")
local types04 = { [1] = "Handshake Initiation", [2] = "Handshake Response", [4] = "Data" }
local f04 = {
    type = ProtoField.uint8("tunlab04.type", "Type", base.DEC, types04),
    reserved = ProtoField.bytes("tunlab04.reserved", "Reserved"),
    sender = ProtoField.uint32("tunlab04.sender", "Sender index", base.HEX),
    receiver = ProtoField.uint32("tunlab04.receiver", "Receiver index", base.HEX),
    ephemeral = ProtoField.bytes("tunlab04.ephemeral", "Ephemeral public key"),
    static = ProtoField.bytes("tunlab04.static", "Static public key (sealed)"),
    timestamp = ProtoField.bytes("tunlab04.timestamp", "TAI64N timestamp (sealed)"),
    empty = ProtoField.bytes("tunlab04.empty", "Empty (sealed): key confirmation"),
    mac1 = ProtoField.bytes("tunlab04.mac1", "mac1"),
    counter = ProtoField.uint64("tunlab04.counter", "Counter", base.DEC),
    encrypted = ProtoField.bytes("tunlab04.encrypted", "Encrypted packet"),
    encrypted_len = ProtoField.uint16("tunlab04.encrypted_length", "Encrypted length (padded packet + 16-byte tag)", base.DEC),
    keepalive = ProtoField.bool("tunlab04.keepalive", "Keepalive (no inner packet)"),
}
p04.fields = f04
local e04_bad = ProtoExpert.new("tunlab04.bad", "Not a valid step 04 message",
    expert.group.MALFORMED, expert.severity.ERROR)
p04.experts = { e04_bad }

local INITIATION_LEN, RESPONSE_LEN, DATA_MIN = 132, 76, 32

-- Conversations (address and port pairs) where a step 04 handshake was
-- seen: their data messages are step 04's, not WireGuard's.
local step04_conversations = {}
local function conversation_key(pinfo)
    local a = tostring(pinfo.src) .. ":" .. tostring(pinfo.src_port)
    local b = tostring(pinfo.dst) .. ":" .. tostring(pinfo.dst_port)
    if a < b then return a .. "|" .. b end
    return b .. "|" .. a
end

-- Whether `tvb` is laid out as a step 04 message of some type.
local function looks_step04(tvb)
    local len = tvb:len()
    if len < 4 or tvb(1, 3):uint() ~= 0 then return false end
    local kind = tvb(0, 1):uint()
    return (kind == 1 and len == INITIATION_LEN) or (kind == 2 and len == RESPONSE_LEN)
        or (kind == 4 and len >= DATA_MIN and len % 16 == 0)
end

-- One step 04 message; returns false if it is not one.
local function dissect_message04(tvb, pinfo, tree)
    if not looks_step04(tvb) then return false end
    local kind = tvb(0, 1):uint()
    local subtree = tree:add(p04, tvb())
    subtree:add(f04.type, tvb(0, 1))
    subtree:add(f04.reserved, tvb(1, 3))
    pinfo.cols.protocol = "TUNLAB04"
    if kind == 1 then
        subtree:add_le(f04.sender, tvb(4, 4))
        subtree:add(f04.ephemeral, tvb(8, 32))
        subtree:add(f04.static, tvb(40, 48))
        subtree:add(f04.timestamp, tvb(88, 28))
        subtree:add(f04.mac1, tvb(116, 16))
        pinfo.cols.info:set(string.format("Handshake Initiation, sender=0x%08X", tvb(4, 4):le_uint()))
    elseif kind == 2 then
        subtree:add_le(f04.sender, tvb(4, 4))
        subtree:add_le(f04.receiver, tvb(8, 4))
        subtree:add(f04.ephemeral, tvb(12, 32))
        subtree:add(f04.empty, tvb(44, 16))
        subtree:add(f04.mac1, tvb(60, 16))
        pinfo.cols.info:set(string.format("Handshake Response, sender=0x%08X, receiver=0x%08X",
            tvb(4, 4):le_uint(), tvb(8, 4):le_uint()))
    else
        local sealed = tvb:len() - 16
        subtree:add_le(f04.receiver, tvb(4, 4))
        subtree:add_le(f04.counter, tvb(8, 8))
        subtree:add(f04.encrypted, tvb(16))
        subtree:add(f04.encrypted_len, tvb(16), sealed)
        subtree:add(f04.keepalive, tvb(16), sealed == 16)
        local what = sealed == 16 and "keepalive" or string.format("%d encrypted bytes", sealed)
        pinfo.cols.info:set(string.format("Data, receiver=0x%08X, counter=%s, %s",
            tvb(4, 4):le_uint(), tostring(tvb(8, 8):le_uint64()), what))
    end
    subtree:append_text(", " .. types04[kind])
    return true
end

---------------------------------------------------------------------------
-- UDP: step 02 or step 04 (or real WireGuard) on the tunnel port
---------------------------------------------------------------------------

local pudp = Proto("tunlab", "tunlab tunnel (UDP)")
pudp.prefs.port = Pref.uint("UDP port", DEFAULT_TUNNEL_PORT, "The tunnel's UDP port (steps 02 to 06)")

function pudp.dissector(tvb, pinfo, tree)
    local len = tvb:len()
    if len == 0 then return 0 end
    local first = tvb(0, 1):uint()
    -- Step 02: version 1 and a nonzero type byte; step 04 and WireGuard
    -- have zeros after their type byte.
    if len >= 4 and first == 1 and tvb(1, 1):uint() ~= 0 then
        dissect_message02(tvb, pinfo, tree)
        return len
    end
    local key = conversation_key(pinfo)
    if looks_step04(tvb) then
        local kind = first
        if kind == 1 or kind == 2 then step04_conversations[key] = true end
        if kind ~= 4 or step04_conversations[key] or not wg_dissector then
            dissect_message04(tvb, pinfo, tree)
            return len
        end
    end
    if wg_dissector then return wg_dissector:call(tvb, pinfo, tree) end
    return 0
end

---------------------------------------------------------------------------
-- TCP: step 02's framed transport, step 06's control connection
---------------------------------------------------------------------------

local function frame_length(tvb, pinfo, offset)
    return 2 + tvb(offset, 2):uint()
end

local ptcp02 = Proto("tunlab02tcp", "tunlab step 02 tunnel over TCP")
ptcp02.prefs.port = Pref.uint("TCP port", DEFAULT_TUNNEL_PORT, "The step 02 tunnel's TCP port")

local function dissect_frame02(tvb, pinfo, tree)
    local item = tree:add(f02.length, tvb(0, 2))
    dissect_message02(tvb(2):tvb(), pinfo, tree)
    return tvb:len()
end

function ptcp02.dissector(tvb, pinfo, tree)
    dissect_tcp_pdus(tvb, tree, 2, frame_length, dissect_frame02)
    return tvb:len()
end

local p06 = Proto("tunlab06", "tunlab step 06 control connection")
p06.prefs.port = Pref.uint("TCP port", DEFAULT_CONTROL_PORT, "The control connection's TCP port (server --listen)")
local f06 = {
    length = ProtoField.uint16("tunlab06.record_length", "Record length", base.DEC),
    index = ProtoField.uint32("tunlab06.record_index", "Record number in this direction", base.DEC),
    counter = ProtoField.uint64("tunlab06.counter", "Counter (implicit: records sealed before this one)", base.DEC),
    sealed = ProtoField.bytes("tunlab06.sealed", "Sealed frame"),
    frame_len = ProtoField.uint16("tunlab06.frame_length", "Frame length (record minus the 16-byte tag)", base.DEC),
}
p06.fields = f06
local e06_bad = ProtoExpert.new("tunlab06.bad", "Not a valid step 06 record",
    expert.group.MALFORMED, expert.severity.ERROR)
p06.experts = { e06_bad }

-- Per direction (and per record start), the position of each record in
-- its stream, counted on the first pass over the packets.
local records_seen = {}
local record_index = {}

-- A TCP segment may carry several records: the Info column lists them all.
local info_packet = nil
local function set_info(pinfo, text)
    if info_packet == pinfo.number then
        pinfo.cols.info:append("; " .. text)
    else
        info_packet = pinfo.number
        pinfo.cols.info:set(text)
    end
end

local function dissect_record06(tvb, pinfo, tree)
    local direction = tostring(pinfo.src) .. ":" .. tostring(pinfo.src_port) .. ">" ..
        tostring(pinfo.dst) .. ":" .. tostring(pinfo.dst_port)
    local id = direction .. "#" .. tostring(pinfo.number) .. "@" .. tostring(tvb:offset())
    local index = record_index[id]
    if index == nil then
        index = records_seen[direction] or 0
        records_seen[direction] = index + 1
        record_index[id] = index
    end
    local subtree = tree:add(p06, tvb())
    subtree:add(f06.length, tvb(0, 2))
    subtree:add(f06.index, tvb(0, 2), index)
    pinfo.cols.protocol = "TUNLAB06"
    local body = tvb(2):tvb()
    if index == 0 then
        if not dissect_message04(body, pinfo, subtree) then
            subtree:add_proto_expert_info(e06_bad, "the first record must be a step 04 handshake message")
        end
        pinfo.cols.protocol = "TUNLAB06"
    elseif body:len() < 16 then
        subtree:add_proto_expert_info(e06_bad, "a sealed record is at least the 16-byte tag")
    else
        subtree:add(f06.counter, tvb(0, 2), UInt64(index - 1))
        subtree:add(f06.sealed, tvb(2))
        subtree:add(f06.frame_len, tvb(2), body:len() - 16)
        set_info(pinfo, string.format("Sealed frame, counter=%d, %d bytes", index - 1, body:len() - 16))
    end
    return tvb:len()
end

function p06.dissector(tvb, pinfo, tree)
    dissect_tcp_pdus(tvb, tree, 2, frame_length, dissect_record06)
    return tvb:len()
end

---------------------------------------------------------------------------
-- Registration, by port (each a preference)
---------------------------------------------------------------------------

local udp_table = DissectorTable.get("udp.port")
local tcp_table = DissectorTable.get("tcp.port")
local registered = {}

local function register()
    if registered.udp then udp_table:remove(registered.udp, pudp) end
    if registered.tcp02 then tcp_table:remove(registered.tcp02, ptcp02) end
    if registered.tcp06 then tcp_table:remove(registered.tcp06, p06) end
    registered.udp, registered.tcp02, registered.tcp06 = pudp.prefs.port, ptcp02.prefs.port, p06.prefs.port
    udp_table:add(registered.udp, pudp)
    tcp_table:add(registered.tcp02, ptcp02)
    tcp_table:add(registered.tcp06, p06)
end

pudp.prefs_changed = register
ptcp02.prefs_changed = register
p06.prefs_changed = register

function pudp.init()
    step04_conversations = {}
end

function p06.init()
    records_seen = {}
    record_index = {}
end

register()
