// @ts-check
// The image chat page. The conversation lives in the webview's state (getState/setState), so it survives the
// panel being hidden and restored; the extension only runs the questions and streams the answers back.
(function () {
  // @ts-ignore: provided by VS Code inside webviews
  const vscode = acquireVsCodeApi();
  const body = document.body;
  const imageUri = body.dataset.imageUri || '';

  /**
   * @typedef {{ model: string, precision: string, device: string, durationMs: number, cached: boolean }} Meta
   * @typedef {{ question: string, answer: string, meta?: Meta, error?: string }} Turn
   * @typedef {{ requestId: string, question: string, textSoFar: string }} Pending
   * @typedef {{ imageUri: string, turns: Turn[], pending?: Pending, draft: string }} State
   */

  /** @type {State} */
  let state = vscode.getState() || { imageUri, turns: [], draft: '' };
  if (state.imageUri !== imageUri) state = { imageUri, turns: [], draft: '' };

  const conversation = /** @type {HTMLElement} */ (document.getElementById('conversation'));
  const form = /** @type {HTMLFormElement} */ (document.getElementById('ask-form'));
  const question = /** @type {HTMLTextAreaElement} */ (document.getElementById('question'));
  const askButton = /** @type {HTMLButtonElement} */ (document.getElementById('ask'));
  const stopButton = /** @type {HTMLButtonElement} */ (document.getElementById('stop'));
  const clearButton = /** @type {HTMLButtonElement} */ (document.getElementById('clear'));
  const status = /** @type {HTMLElement} */ (document.getElementById('status'));

  question.value = state.draft || '';

  function save() {
    vscode.setState(state);
  }

  function newRequestId() {
    return `q${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  }

  /** @param {Meta | undefined} meta */
  function describeMeta(meta) {
    if (!meta) return '';
    const time = meta.cached ? 'from the cache' : `${(meta.durationMs / 1000).toFixed(1)} s`;
    // A folder path says less than its last part.
    const model = meta.model.split(/[\\/]/).filter(Boolean).pop() || meta.model;
    return `${model} · ${meta.precision} · ${meta.device} · ${time}`;
  }

  /**
   * @param {string} q
   * @param {string} a
   * @param {{ meta?: Meta, error?: string, streaming?: boolean }} extra
   */
  function turnElement(q, a, extra) {
    const section = document.createElement('section');
    section.className = 'turn' + (extra.streaming ? ' pending' : '') + (extra.error ? ' failed' : '');
    const qEl = document.createElement('div');
    qEl.className = 'question';
    qEl.textContent = q;
    const aEl = document.createElement('div');
    aEl.className = 'answer' + (extra.streaming ? ' streaming' : '');
    aEl.textContent = extra.error ? extra.error : a || (extra.streaming ? '…' : '');
    section.append(qEl, aEl);
    if (!extra.streaming && !extra.error) {
      const footer = document.createElement('div');
      footer.className = 'meta';
      const metaText = document.createElement('span');
      metaText.textContent = describeMeta(extra.meta);
      const copy = document.createElement('button');
      copy.type = 'button';
      copy.className = 'link copy';
      copy.textContent = 'Copy';
      copy.title = 'Copy the answer';
      copy.addEventListener('click', () => vscode.postMessage({ type: 'copy', text: a }));
      footer.append(metaText, copy);
      section.append(footer);
    }
    return section;
  }

  function render() {
    conversation.replaceChildren(
      ...state.turns.map((t) => turnElement(t.question, t.answer, { meta: t.meta, error: t.error })),
      ...(state.pending ? [turnElement(state.pending.question, state.pending.textSoFar, { streaming: true })] : []),
    );
    const busy = state.pending !== undefined;
    askButton.disabled = busy;
    stopButton.hidden = !busy;
    body.dataset.busy = String(busy);
    conversation.lastElementChild?.scrollIntoView({ block: 'end' });
  }

  function ask() {
    const text = question.value.trim();
    if (!text || state.pending) return;
    const history = state.turns.filter((t) => !t.error).map((t) => ({ question: t.question, answer: t.answer }));
    const requestId = newRequestId();
    state.pending = { requestId, question: text, textSoFar: '' };
    state.draft = '';
    question.value = '';
    save();
    render();
    vscode.postMessage({ type: 'ask', requestId, question: text, history });
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    ask();
  });
  question.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ask();
    }
  });
  question.addEventListener('input', () => {
    state.draft = question.value;
    save();
  });
  stopButton.addEventListener('click', () => {
    if (state.pending) vscode.postMessage({ type: 'cancel', requestId: state.pending.requestId });
  });
  clearButton.addEventListener('click', () => {
    if (state.pending) vscode.postMessage({ type: 'cancel', requestId: state.pending.requestId });
    state = { imageUri, turns: [], draft: question.value };
    save();
    render();
    question.focus();
  });

  window.addEventListener('message', (event) => {
    const message = event.data;
    if (!message || typeof message !== 'object') return;
    switch (message.type) {
      case 'partial':
        if (state.pending?.requestId === message.requestId) {
          state.pending.textSoFar = message.textSoFar;
          save();
          const answer = conversation.querySelector('.turn.pending .answer');
          if (answer) answer.textContent = message.textSoFar || '…';
          else render();
        }
        break;
      case 'answer':
        if (state.pending?.requestId === message.requestId) {
          state.turns.push({ question: message.question, answer: message.text, meta: message.meta });
          state.pending = undefined;
          save();
          render();
          question.focus();
        }
        break;
      case 'error':
        if (state.pending?.requestId === message.requestId) {
          state.turns.push({ question: message.question, answer: '', error: message.message });
          state.pending = undefined;
          save();
          render();
        }
        break;
      case 'hello':
        // A question asked before the window reloaded has no one left to answer it.
        if (state.pending && !message.activeRequestIds.includes(state.pending.requestId)) {
          state.turns.push({ question: state.pending.question, answer: '', error: 'The answer was interrupted; ask again.' });
          state.pending = undefined;
          save();
          render();
        }
        break;
      case 'status':
        status.textContent = message.text;
        body.dataset.modelReady = String(message.ready);
        break;
    }
  });

  render();
  vscode.postMessage({ type: 'ready' });
  if (!state.pending) question.focus();
})();
