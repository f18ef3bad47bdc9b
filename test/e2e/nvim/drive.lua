-- Drives the BLIP-2 server through Neovim's own LSP client, using blip2-lsp.lua (the README's snippet) as is:
-- opens a markdown file, hovers an image link, lists and resolves the code actions on a missing alt text, and
-- writes what it got to $BLIP2_NVIM_OUT as JSON. Run: nvim --headless --clean -c 'luafile drive.lua'.
-- Environment: BLIP2_NVIM_OUT, BLIP2_NODE, BLIP2_SERVER, BLIP2_MODEL, BLIP2_STORE, BLIP2_DOC (the markdown
-- file), BLIP2_HOVER_LINE / BLIP2_HOVER_CHAR (0-based position of the image link to hover) and
-- BLIP2_ACTION_LINE (0-based line of the image without alt text).
local out = assert(os.getenv('BLIP2_NVIM_OUT'), 'BLIP2_NVIM_OUT not set')
local here = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h')
package.path = here .. '/?.lua;' .. package.path

local result = { errors = {} }

local function finish()
  local file = assert(io.open(out, 'w'))
  file:write(vim.fn.json_encode(result))
  file:close()
  local client = require('blip2-lsp').client()
  if client then
    client.stop()
    vim.wait(5000, function()
      return client.is_stopped()
    end, 50)
  end
  vim.cmd('qall!')
end

local ok, err = pcall(function()
  local blip2 = require('blip2-lsp')
  blip2.setup({
    node = os.getenv('BLIP2_NODE'),
    server = os.getenv('BLIP2_SERVER'),
    root_dir = vim.fn.fnamemodify(os.getenv('BLIP2_DOC'), ':h'),
    settings = { model = os.getenv('BLIP2_MODEL'), precision = 'fp32', modelStore = os.getenv('BLIP2_STORE') },
  })
  vim.cmd('edit ' .. vim.fn.fnameescape(os.getenv('BLIP2_DOC')))
  local bufnr = vim.api.nvim_get_current_buf()
  assert(vim.wait(30000, function()
    local client = blip2.client()
    return client ~= nil and client.initialized == true
  end, 50), 'the server did not initialize')
  local uri = vim.uri_from_bufnr(bufnr)

  -- Hover on the image link; while the first caption is computed the server says "Captioning…": ask again.
  local hover_line = tonumber(os.getenv('BLIP2_HOVER_LINE'))
  local hover_text
  vim.wait(60000, function()
    local responses = vim.lsp.buf_request_sync(bufnr, 'textDocument/hover', {
      textDocument = { uri = uri },
      position = { line = hover_line, character = tonumber(os.getenv('BLIP2_HOVER_CHAR')) },
    }, 10000)
    for _, response in pairs(responses or {}) do
      local contents = response.result and response.result.contents
      if contents then
        hover_text = type(contents) == 'table' and (contents.value or vim.inspect(contents)) or tostring(contents)
      end
    end
    return hover_text ~= nil and not hover_text:find('Captioning', 1, true)
  end, 200)
  result.hover = hover_text

  -- The code actions on the line whose image has no alt text, with the server's diagnostics as context.
  local action_line = tonumber(os.getenv('BLIP2_ACTION_LINE'))
  assert(vim.wait(30000, function()
    return #vim.lsp.diagnostic.get_line_diagnostics(bufnr, action_line) > 0
  end, 50), 'no diagnostics on line ' .. action_line)
  local diagnostics = vim.lsp.diagnostic.get_line_diagnostics(bufnr, action_line)
  result.diagnostics = vim.tbl_map(function(d)
    return { code = d.code, source = d.source, message = d.message }
  end, diagnostics)
  local responses = vim.lsp.buf_request_sync(bufnr, 'textDocument/codeAction', {
    textDocument = { uri = uri },
    range = diagnostics[1].range,
    context = { diagnostics = diagnostics },
  }, 10000)
  result.actions = {}
  local fix
  for _, response in pairs(responses or {}) do
    for _, action in ipairs(response.result or {}) do
      table.insert(result.actions, action.title)
      if action.title == 'Generate alt text with BLIP-2' then
        fix = action
      end
    end
  end

  -- Choosing it: the server computes the caption now (codeAction/resolve); apply the edit and save.
  if fix then
    local client = blip2.client()
    local resolved = fix.edit and { result = fix } or client.request_sync('codeAction/resolve', fix, 60000, bufnr)
    if resolved and resolved.result and resolved.result.edit then
      vim.lsp.util.apply_workspace_edit(resolved.result.edit, client.offset_encoding)
      vim.cmd('write')
      result.fixedLine = vim.api.nvim_buf_get_lines(bufnr, action_line, action_line + 1, false)[1]
    else
      table.insert(result.errors, 'codeAction/resolve gave no edit: ' .. vim.inspect(resolved))
    end
  end
end)

if not ok then
  table.insert(result.errors, tostring(err))
end
finish()
