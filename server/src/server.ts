// The BLIP-2 language server's entry: `node dist/server.js --stdio` (any editor) or `--node-ipc` (the VS Code
// client). This file only binds connection events to the server's methods; the server holds no transport.
import { ExecuteCommandRequest, ResponseError, TextDocuments, WorkDoneProgressCancelNotification } from 'vscode-languageserver/node';
import { TextDocument } from 'vscode-languageserver-textdocument';
import { createInferenceService } from './inference/service';
import { Blip2Server } from './lsp/blip2-server';
import { ConnectionClient } from './lsp/connection-client';
import { ProtocolGuard, REFUSED_METHOD, type Refusal } from './lsp/protocol-guard';
import { serverConnection } from './lsp/transport';
import { AskRequest, CaptionRequest, CountersRequest, ModelStatusRequest, SetUpModelRequest, SetUpPlanRequest } from './protocol/messages';

// Lifecycle and params are checked before any handler below runs (protocol-guard.ts).
const guard = new ProtocolGuard((line) => void process.stderr.write(`blip2-language-server: ${line}\n`));
const connection = serverConnection(guard);
const documents = new TextDocuments(TextDocument);
const server = new Blip2Server(new ConnectionClient(connection), documents, createInferenceService);

connection.onInitialize((params) => server.initialize(params));
connection.onInitialized(() => {
  // Bound here, after the library's own handlers: those exist only once initialize has seen the capabilities.
  connection.onNotification(WorkDoneProgressCancelNotification.type, (params) => server.cancelProgress(params.token));
  if (server.wantsWorkspaceFolderEvents()) connection.workspace.onDidChangeWorkspaceFolders((event) => server.workspaceFoldersChanged(event));
  void server.initialized();
});
connection.onDidChangeConfiguration((params) => void server.configurationChanged(params.settings));
connection.onDidChangeWatchedFiles(() => void server.configurationChanged());
connection.onShutdown(() => server.shutdown());

documents.onDidOpen((event) => server.opened(event.document));
documents.onDidChangeContent((event) => server.changed(event.document));
documents.onDidClose((event) => server.closed(event.document));

connection.onHover((params, token) => server.hover(params, token));
connection.onCodeAction((params, token) => server.codeActions(params, token));
connection.onCodeActionResolve((action, token) => server.resolveCodeAction(action, token));
// Not onExecuteCommand: it takes the work-done token out of the params, and the server needs it to hear "Cancel".
connection.onRequest(ExecuteCommandRequest.type, (params, token) => server.executeCommand(params, token, params.workDoneToken));

connection.onRequest(CaptionRequest.type, (params, token) => server.caption(params, token));
connection.onRequest(AskRequest.type, (params, token) => server.ask(params, token));
connection.onRequest(ModelStatusRequest.type, () => server.modelStatus());
connection.onRequest(SetUpModelRequest.type, (params, token) => server.setUpModel(params, token));
connection.onRequest(SetUpPlanRequest.type, (params, token) => server.setUpPlan(params, token));
connection.onRequest(CountersRequest.type, () => server.counters());
connection.onRequest(REFUSED_METHOD, (refusal: Refusal) => {
  throw new ResponseError(refusal.code, refusal.message);
});

process.on('unhandledRejection', (reason) => connection.console.error(`Unhandled rejection: ${String((reason as Error)?.stack ?? reason)}`));

documents.listen(connection);
connection.listen();
