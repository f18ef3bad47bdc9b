-- Drives the BLIP-2 server through Neovim's own LSP client as a person would, configured as docs/editors.md says:
-- opens a markdown file, hovers an image link (K, the hover float), and on the image without alt text runs
-- :lua vim.lsp.buf.code_action(), picking "Generate alt text with BLIP-2" from the menu; then saves. Writes what
-- it saw to $BLIP2_NVIM_OUT as JSON, with every message Neovim showed. Run: nvim --headless --clean -c 'luafile drive.lua'.
-- Environment: BLIP2_NVIM_OUT; BLIP2_NVIM_SETUP ('module': docs/editors.md's blip2-lsp.lua; 'lspconfig': its
-- nvim-lspconfig recipe, lspconfig-init.lua, with the user's paths filled in); BLIP2_NODE, BLIP2_SERVER,
-- BLIP2_MODEL, BLIP2_STORE; BLIP2_DOC (the markdown file); BLIP2_HOVER_LINE / BLIP2_HOVER_CHAR (0-based position
-- of the image link to hover); BLIP2_ACTION_LINE (0-based line of the image without alt text).
local out = assert(os.getenv('BLIP2_NVIM_OUT'), 'BLIP2_NVIM_OUT not set')
local here = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h')
package.path = here .. '/?.lua;' .. here .. '/vendor/nvim-lspconfig/lua/?.lua;' .. package.path

local result = { errors = {}, notifications = {}, menu = {} }

-- What the user would see as notifications.
vim.notify = function(message, level)
  table.insert(result.notifications, { message = tostring(message), level = level or vim.log.levels.INFO })
end

local function blip2_client()
  for _, client in pairs(vim.lsp.get_active_clients()) do
    if client.name == 'blip2' then
      return client
    end
  end
end

local function finish()
  result.messages = vim.api.nvim_exec('messages', true)
  local file = assert(io.open(out, 'w'))
  file:write(vim.fn.json_encode(result))
  file:close()
  local client = blip2_client()
  if client then
    client.stop()
    vim.wait(5000, function()
      return client.is_stopped()
    end, 50)
  end
  vim.cmd('qall!')
end

--- The text of the floating windows open now (the hover), closing them.
local function take_floats()
  local texts = {}
  for _, win in ipairs(vim.api.nvim_list_wins()) do
    if vim.api.nvim_win_get_config(win).relative ~= '' then
      table.insert(texts, table.concat(vim.api.nvim_buf_get_lines(vim.api.nvim_win_get_buf(win), 0, -1, false), '\n'))
      vim.api.nvim_win_close(win, true)
    end
  end
  return table.concat(texts, '\n')
end

local function setup()
  local mode = os.getenv('BLIP2_NVIM_SETUP')
  if mode == 'module' then
    require('blip2-lsp').setup({
      node = os.getenv('BLIP2_NODE'),
      server = os.getenv('BLIP2_SERVER'),
      root_dir = vim.fn.fnamemodify(os.getenv('BLIP2_DOC'), ':h'),
      settings = { model = os.getenv('BLIP2_MODEL'), precision = 'fp32', modelStore = os.getenv('BLIP2_STORE') },
    })
  elseif mode == 'lspconfig' then
    -- The recipe as docs/editors.md prints it, with this machine's paths where it has placeholders.
    local recipe = table.concat(vim.fn.readfile(here .. '/lspconfig-init.lua'), '\n')
    local function fill(placeholder, value)
      local filled, count = recipe:gsub(vim.pesc(placeholder), (value:gsub('%%', '%%%%')))
      assert(count == 1, 'the recipe has no ' .. placeholder)
      recipe = filled
    end
    fill("'node'", vim.fn.string(os.getenv('BLIP2_NODE')))
    fill('/path/to/blip2-vscode/dist/server.js', os.getenv('BLIP2_SERVER'))
    fill('Salesforce/blip2-opt-2.7b', os.getenv('BLIP2_MODEL'))
    fill("'int4'", "'fp32'")
    assert(loadstring(recipe, 'lspconfig-init.lua'))()
  else
    error('BLIP2_NVIM_SETUP must be module or lspconfig')
  end
end

local ok, err = pcall(function()
  setup()
  vim.cmd('edit ' .. vim.fn.fnameescape(os.getenv('BLIP2_DOC')))
  local bufnr = vim.api.nvim_get_current_buf()
  assert(vim.wait(30000, function()
    local client = blip2_client()
    return client ~= nil and client.initialized == true
  end, 50), 'the server did not initialize')

  -- K on the image link; while the first caption is computed the hover says "Captioning…": ask again.
  vim.api.nvim_win_set_cursor(0, { tonumber(os.getenv('BLIP2_HOVER_LINE')) + 1, tonumber(os.getenv('BLIP2_HOVER_CHAR')) })
  vim.wait(90000, function()
    vim.lsp.buf.hover()
    local shown
    vim.wait(10000, function()
      shown = take_floats()
      return shown ~= ''
    end, 50)
    result.hover = shown
    if shown:find('Captioning', 1, true) then
      vim.wait(500)
      return false
    end
    return shown ~= ''
  end, 100)

  -- The diagnostics on the line whose image has no alt text.
  local action_line = tonumber(os.getenv('BLIP2_ACTION_LINE'))
  assert(vim.wait(30000, function()
    return #vim.diagnostic.get(bufnr, { lnum = action_line }) > 0
  end, 50), 'no diagnostics on line ' .. action_line)
  result.diagnostics = vim.tbl_map(function(d)
    return { code = d.code, source = d.source, message = d.message, severity = d.severity }
  end, vim.diagnostic.get(bufnr, { lnum = action_line }))

  -- :lua vim.lsp.buf.code_action() there; the user picks our action from the menu.
  local before = vim.api.nvim_buf_get_lines(bufnr, action_line, action_line + 1, false)[1]
  vim.api.nvim_win_set_cursor(0, { action_line + 1, 1 })
  vim.ui.select = function(items, opts, on_choice)
    local picked
    for i, item in ipairs(items) do
      local title = opts.format_item and opts.format_item(item) or tostring(item)
      table.insert(result.menu, title)
      if title:find('Generate alt text with BLIP-2', 1, true) then
        picked = picked or i
      end
    end
    on_choice(picked and items[picked] or nil, picked)
  end
  vim.lsp.buf.code_action()
  vim.wait(60000, function()
    return vim.api.nvim_buf_get_lines(bufnr, action_line, action_line + 1, false)[1] ~= before
  end, 50)
  -- Anything the action does afterwards (a follow-up command, a message) has its moment to show up.
  vim.wait(1000)
  vim.cmd('write')
  result.fixedLine = vim.api.nvim_buf_get_lines(bufnr, action_line, action_line + 1, false)[1]
end)

if not ok then
  table.insert(result.errors, tostring(err))
end
finish()
