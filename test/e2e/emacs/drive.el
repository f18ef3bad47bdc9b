;;; drive.el --- drives eglot against the BLIP-2 server as a person would  -*- lexical-binding: t -*-
;; Loads blip2-eglot.el (the recipe in docs/editors.md) with this machine's paths where it has placeholders, opens
;; a markdown file, shows the hover of an image link through eldoc's hover function, runs M-x eglot-code-actions
;; on the image without alt text and picks "Generate alt text with BLIP-2" (answering eglot's "Server wants to
;; edit" question with yes), saves, and writes what it saw to $BLIP2_EMACS_OUT as JSON with everything
;; *Messages* shows. Run: emacs --batch -l drive.el. Environment: BLIP2_EMACS_OUT, BLIP2_NODE, BLIP2_SERVER,
;; BLIP2_MODEL, BLIP2_DOC, BLIP2_HOVER_LINE / BLIP2_HOVER_CHAR (0-based), BLIP2_ACTION_LINE (0-based).
(require 'cl-lib)
(require 'json)
(require 'eglot)
(require 'markdown-mode)

(defvar blip2-here (file-name-directory (or load-file-name buffer-file-name)))
(defvar blip2-result (list :errors nil :prompts nil :menu nil :hover nil :diagnostics nil))

(defun blip2-put (key value) (setq blip2-result (plist-put blip2-result key value)))
(defun blip2-push (key value) (blip2-put key (append (plist-get blip2-result key) (list value))))

(defun blip2-wait (what seconds predicate)
  "Process server messages until PREDICATE holds, at most SECONDS; signal naming WHAT otherwise."
  (let ((deadline (+ (float-time) seconds)))
    (while (and (not (funcall predicate)) (< (float-time) deadline))
      (accept-process-output nil 0.05))
    (or (funcall predicate) (error "Timed out waiting for %s" what))))

(defun blip2-goto (line char)
  (goto-char (point-min))
  (forward-line line)
  (forward-char char))

(defun blip2-load-recipe ()
  (let ((recipe (with-temp-buffer
                  (insert-file-contents (expand-file-name "blip2-eglot.el" blip2-here))
                  (buffer-string))))
    (dolist (pair `(("\"node\"" . ,(prin1-to-string (getenv "BLIP2_NODE")))
                    ("/path/to/blip2-vscode/dist/server.js" . ,(getenv "BLIP2_SERVER"))
                    ("Salesforce/blip2-opt-2.7b" . ,(getenv "BLIP2_MODEL"))
                    ("\"int4\"" . "\"fp32\"")))
      (unless (string-match-p (regexp-quote (car pair)) recipe) (error "The recipe has no %s" (car pair)))
      (setq recipe (string-replace (car pair) (cdr pair) recipe)))
    (with-temp-buffer
      (insert recipe)
      (eval-buffer))))

(condition-case err
    (cl-letf (((symbol-function 'y-or-n-p) (lambda (prompt) (blip2-push :prompts prompt) t))
              ((symbol-function 'completing-read)
               (lambda (prompt collection &rest _)
                 (blip2-push :prompts prompt)
                 (let ((titles (mapcar (lambda (c) (if (consp c) (car c) c)) collection)))
                   (blip2-put :menu titles)
                   (cl-find "Generate alt text with BLIP-2" titles :test #'equal)))))
      (blip2-load-recipe)
      (find-file (getenv "BLIP2_DOC"))
      ;; eglot-ensure connects at the next command, which in batch is this one.
      (run-hooks 'post-command-hook)
      (blip2-wait "the server" 30 (lambda () (eglot-current-server)))
      (let ((action-line (string-to-number (getenv "BLIP2_ACTION_LINE"))))
        ;; Point on the image link: what eldoc shows (the first caption may still be "Captioning…").
        (blip2-goto (string-to-number (getenv "BLIP2_HOVER_LINE")) (string-to-number (getenv "BLIP2_HOVER_CHAR")))
        (blip2-wait "a caption in the hover" 90
                    (lambda ()
                      (let (shown)
                        (eglot-hover-eldoc-function (lambda (info &rest _) (setq shown (or info ""))))
                        (blip2-wait "a hover" 10 (lambda () shown))
                        (blip2-put :hover shown)
                        (and (not (string-empty-p shown)) (not (string-match-p "Captioning" shown))))))
        (blip2-goto action-line 1)
        (blip2-wait "diagnostics" 30 (lambda () (flymake-diagnostics (line-beginning-position) (line-end-position))))
        (blip2-put :diagnostics
                   (vconcat (mapcar (lambda (d) (list :type (symbol-name (flymake-diagnostic-type d)) :text (flymake-diagnostic-text d)))
                                    (flymake-diagnostics (line-beginning-position) (line-end-position)))))
        (let ((before (buffer-substring-no-properties (line-beginning-position) (line-end-position)))
              ;; As when typed after M-x: a keyboard event, so eglot asks in the minibuffer rather than a menu.
              (last-nonmenu-event ?\r))
          (call-interactively #'eglot-code-actions)
          (blip2-wait "the edit" 120
                      (lambda ()
                        (save-excursion
                          (goto-char (point-min))
                          (forward-line action-line)
                          (not (equal before (buffer-substring-no-properties (line-beginning-position) (line-end-position))))))))
        (save-buffer)
        (goto-char (point-min))
        (forward-line action-line)
        (blip2-put :fixedLine (buffer-substring-no-properties (line-beginning-position) (line-end-position)))))
  (error
   (blip2-push :errors (error-message-string err))
   ;; The protocol traffic, to see why.
   (when-let ((server (ignore-errors (eglot-current-server))))
     (with-current-buffer (jsonrpc-events-buffer server)
       (blip2-put :events (buffer-substring-no-properties (point-min) (point-max))))
     (with-current-buffer (jsonrpc-stderr-buffer server)
       (blip2-put :stderr (buffer-substring-no-properties (point-min) (point-max)))))))

(blip2-put :messages (with-current-buffer (messages-buffer) (buffer-substring-no-properties (point-min) (point-max))))
(dolist (key '(:errors :prompts :menu))
  (blip2-put key (vconcat (plist-get blip2-result key))))
(with-temp-file (getenv "BLIP2_EMACS_OUT")
  (insert (json-encode blip2-result)))
(ignore-errors (eglot-shutdown (eglot-current-server)))
(kill-emacs 0)
