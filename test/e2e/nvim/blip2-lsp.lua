-- BLIP-2 in Neovim (0.7 or newer, built-in LSP client): image captions on hover (K), alt-text diagnostics,
-- and the quick fix "Generate alt text with BLIP-2" (:lua vim.lsp.buf.code_action()), all computed on this
-- machine by the same language server the VS Code extension runs.
--
-- Save this file as ~/.config/nvim/lua/blip2-lsp.lua, then in init.lua:
--
--   require('blip2-lsp').setup({
--     server = '/path/to/blip2-vscode/dist/server.js',   -- or the VS Code extension's installed copy
--     settings = { model = 'Salesforce/blip2-opt-2.7b', precision = 'int4' },  -- the blip2.* settings
--   })
--
-- Commands: :Blip2Caption [image]   caption an image file (default: the file under the cursor)
--           :Blip2Ask {question}    ask about the image file under the cursor
local M = {}

M.filetypes = { 'markdown', 'html', 'javascriptreact', 'typescriptreact' }

local client_id

--- The running BLIP-2 client, if any.
function M.client()
  return client_id and vim.lsp.get_client_by_id(client_id) or nil
end

function M.setup(opts)
  opts = opts or {}
  local settings = opts.settings or {}
  local config = {
    name = 'blip2',
    cmd = { opts.node or 'node', opts.server or 'dist/server.js', '--stdio' },
    root_dir = opts.root_dir or vim.loop.cwd(),
    -- The server takes the settings at start-up (Neovim 0.7 does not offer workspace/configuration), and
    -- answers from `settings` where a newer Neovim offers it.
    init_options = settings,
    settings = { blip2 = settings },
  }

  local function attach(bufnr)
    if not M.client() then
      client_id = vim.lsp.start_client(config)
    end
    if client_id then
      vim.lsp.buf_attach_client(bufnr, client_id)
    end
  end

  vim.api.nvim_create_autocmd('FileType', {
    pattern = M.filetypes,
    callback = function(args)
      attach(args.buf)
    end,
  })

  local function image_arg(arg)
    local file = (arg ~= nil and arg ~= '') and arg or vim.fn.expand('<cfile>')
    return vim.uri_from_fname(vim.fn.fnamemodify(file, ':p'))
  end

  vim.api.nvim_create_user_command('Blip2Caption', function(c)
    M.request('blip2/caption', { image = image_arg(c.args) }, function(result)
      print('BLIP-2: ' .. result.text)
    end)
  end, { nargs = '?', complete = 'file' })

  vim.api.nvim_create_user_command('Blip2Ask', function(c)
    M.request('blip2/ask', { image = image_arg(nil), question = c.args }, function(result)
      print('BLIP-2: ' .. result.text)
    end)
  end, { nargs = '+' })

  return config
end

--- Sends one of the server's own requests (blip2/caption, blip2/ask, blip2/modelStatus) and calls back with the result.
function M.request(method, params, on_result)
  local client = M.client()
  if not client then
    vim.notify('BLIP-2: the server is not running (open a markdown file first)', vim.log.levels.WARN)
    return
  end
  client.request(method, params, function(err, result)
    if err then
      vim.notify('BLIP-2: ' .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
    else
      on_result(result)
    end
  end)
end

return M
