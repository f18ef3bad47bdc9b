-- BLIP-2 with nvim-lspconfig (v0.1.x for Neovim 0.7, any later release for later Neovim), in init.lua:
local lspconfig = require('lspconfig')
require('lspconfig.configs').blip2 = {
  default_config = {
    cmd = { 'node', '/path/to/blip2-vscode/dist/server.js', '--stdio' },
    filetypes = { 'markdown', 'html', 'javascriptreact', 'typescriptreact' },
    root_dir = lspconfig.util.root_pattern('.blip2.json', '.git'),
    single_file_support = true,
  },
}
lspconfig.blip2.setup({
  -- The model and how it runs: read when the server starts.
  init_options = { model = 'Salesforce/blip2-opt-2.7b', precision = 'int4' },
  -- The other blip2.* settings: lspconfig sends them with workspace/didChangeConfiguration.
  settings = { blip2 = { altText = { rules = { ['missing-alt'] = 'error' } } } },
})
