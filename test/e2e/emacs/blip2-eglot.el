;; BLIP-2 in Emacs with eglot (1.9 or newer): image captions in the echo area (eldoc) with point on an image,
;; alt-text diagnostics (flymake), and the quick fix "Generate alt text with BLIP-2" from M-x eglot-code-actions,
;; all computed on this machine by the same language server the VS Code extension runs. In init.el:
(with-eval-after-load 'eglot
  (let ((blip2 '("node" "/path/to/blip2-vscode/dist/server.js" "--stdio")))
    ;; One entry per language: eglot 1.9 gives each server one language id.
    (add-to-list 'eglot-server-programs
                 `(((markdown-mode :language-id "markdown") (gfm-mode :language-id "markdown")) . ,blip2))
    (add-to-list 'eglot-server-programs
                 `(((mhtml-mode :language-id "html") (html-mode :language-id "html")) . ,blip2))))
;; The blip2.* settings, which eglot answers to workspace/configuration; per project, set this variable in
;; the project's .dir-locals.el instead.
(setq-default eglot-workspace-configuration
              '(:blip2 (:model "Salesforce/blip2-opt-2.7b" :precision "int4")))
(add-hook 'markdown-mode-hook #'eglot-ensure)
(add-hook 'mhtml-mode-hook #'eglot-ensure)
