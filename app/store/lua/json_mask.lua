-- A run's maskedFields applied to JSON text inside Redis, by the rules of
-- app/runtime/masking.py (RunMask): the value under a masked name, at any depth, shows as
-- "***"; the text of each value found under a masked name (a string or number of at least
-- MIN_SECRET_CHARS characters) is replaced by *** wherever else it shows (other values,
-- keys, longer strings); such a number shows as "***". The loader puts this before lib.lua.
-- The text is walked token by token, not decoded and encoded again: numbers keep their
-- digits and objects their order (cjson would round both), and only what is masked changes.

local MASK = '***'
local MIN_SECRET_CHARS = 4

-- Characters (UTF-8 code points) of a text, as Python counts them.
local function chars(text)
  local _, count = string.gsub(text, '[^\128-\191]', '')
  return count
end

-- Every occurrence of `secret` in `text` replaced by MASK (plain, not a pattern).
local function replace_plain(text, secret)
  local found = string.find(text, secret, 1, true)
  if not found then return text end
  local pieces, start = {}, 1
  while found do
    pieces[#pieces + 1] = string.sub(text, start, found - 1)
    pieces[#pieces + 1] = MASK
    start = found + #secret
    found = string.find(text, secret, start, true)
  end
  pieces[#pieces + 1] = string.sub(text, start)
  return table.concat(pieces)
end

-- `text` with each secret of the list (longest first) replaced.
local function mask_text(text, secrets)
  for _, secret in ipairs(secrets) do text = replace_plain(text, secret) end
  return text
end

-- The position of the quote that closes the JSON string opened at `i`.
local function string_end(text, i)
  local at = i + 1
  while true do
    local k = string.find(text, '["\\]', at)
    if not k then return #text end
    if string.byte(text, k) == 92 then at = k + 2 else return k end
  end
end

-- The position of the last character of the JSON value that starts at `i`.
local function value_end(text, i)
  local c = string.sub(text, i, i)
  if c == '"' then return string_end(text, i) end
  if c == '{' or c == '[' then
    local depth, at = 0, i
    while true do
      local k = string.find(text, '[%[%]{}"]', at)
      if not k then return #text end
      local d = string.sub(text, k, k)
      if d == '"' then
        at = string_end(text, k) + 1
      else
        if d == '{' or d == '[' then depth = depth + 1 else depth = depth - 1 end
        if depth == 0 then return k end
        at = k + 1
      end
    end
  end
  local _, e = string.find(text, '^[^,:%]}%s]+', i)
  return e or i
end

-- A JSON string token as shown: its text masked, encoded again only if that changed it.
local function shown_string(token, value, secrets)
  if type(value) ~= 'string' then return token end
  local masked = mask_text(value, secrets)
  if masked == value then return token end
  return cjson.encode(masked)
end

-- Walk JSON `text` (iteratively: payloads nest deep). With `found` (a set), collect the
-- texts of the scalars under masked `names` into it and return nothing; else return the
-- text as shown, with `secrets` (a list, longest first) and `secret_set` (the same, as a set).
local function walk_json(text, names, found, secrets, secret_set)
  local out, stack = {}, {}
  local expect_key, value_masked = false, false
  local i, n = 1, #text
  while i <= n do
    local s = string.find(text, '%S', i)
    if not s then
      out[#out + 1] = string.sub(text, i)
      break
    end
    out[#out + 1] = string.sub(text, i, s - 1)
    local c = string.sub(text, s, s)
    local top = stack[#stack]
    local masked = value_masked or (top ~= nil and top.masked)
    if c == ',' then
      out[#out + 1] = c
      expect_key = top ~= nil and top.object
      i = s + 1
    elseif c == ':' then
      out[#out + 1] = c
      i = s + 1
    elseif c == '{' or c == '[' then
      stack[#stack + 1] = {object = c == '{', masked = masked}
      expect_key, value_masked = c == '{', false
      out[#out + 1] = c
      i = s + 1
    elseif c == '}' or c == ']' then
      stack[#stack] = nil
      expect_key = false
      out[#out + 1] = c
      i = s + 1
    elseif c == '"' then
      local e = string_end(text, s)
      local token = string.sub(text, s, e)
      local ok, value = pcall(cjson.decode, token)
      if not ok then value = nil end
      if expect_key then
        expect_key = false
        local hidden = type(value) == 'string' and names[value] == true
        if found then
          value_masked = hidden
          i = e + 1
        else
          out[#out + 1] = shown_string(token, value, secrets)
          i = e + 1
          if hidden then
            -- the name's value, whatever it holds, shows as "***"
            local colon = string.find(text, ':', i, true)
            local start = colon and string.find(text, '%S', colon + 1)
            if start then
              out[#out + 1] = string.sub(text, i, start - 1) .. '"' .. MASK .. '"'
              i = value_end(text, start) + 1
            end
          end
        end
      else
        if found then
          if masked and type(value) == 'string' and chars(value) >= MIN_SECRET_CHARS then
            found[value] = true
          end
        else
          out[#out + 1] = shown_string(token, value, secrets)
        end
        value_masked = false
        i = e + 1
      end
    else
      -- a number, true, false or null
      local e = value_end(text, s)
      local token = string.sub(text, s, e)
      local number = string.find(token, '^[-%d]') ~= nil
      if found then
        if masked and number and #token >= MIN_SECRET_CHARS then found[token] = true end
      elseif number and secret_set[token] then
        out[#out + 1] = '"' .. MASK .. '"'
      else
        out[#out + 1] = token
      end
      value_masked = false
      i = e + 1
    end
  end
  if not found then return table.concat(out) end
end

-- The secrets of a set of texts as a list, longest first (then in byte order), so that a
-- secret containing another is replaced whole.
local function secrets_of(found)
  local list = {}
  for text in pairs(found) do list[#list + 1] = text end
  table.sort(list, function(a, b)
    local la, lb = chars(a), chars(b)
    if la ~= lb then return la > lb end
    return a < b
  end)
  return list
end
