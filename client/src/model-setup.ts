// First-run model set-up: offer to download the model or use a folder, then run `blip2/setUpModel` with its
// progress in a cancellable notification. Cancelling keeps what was downloaded, so the next set-up resumes.
import { randomUUID } from 'node:crypto';
import * as vscode from 'vscode';
import { SetUpModelRequest, type ModelStatus } from '../../server/src/protocol/messages';
import { settingGetter, type ServerConnection } from './client';
import { EXTENSION_ID, readSettings, SECTION } from './config';
import { describeRequestError, type RequestFailure } from './request-errors';
import { showServerFailure } from './server-failure';
import { downloadOffer, SETUP_CANCELLED_MESSAGE, setUpPickerTitle } from './setup-text';
import { reportWorkDone } from './work-done';

const DISMISSED_KEY = 'blip2.setUpOfferDismissed';
const FIRST_RUN_KEY = 'blip2.firstRunDone';
const CHOOSE_FOLDER = 'Choose Local Folder…';

export class ModelSetup implements vscode.Disposable {
  /** The automatic offer comes once a session; commands that need the model offer again when they fail. */
  private offeredAutomatically = false;
  private running: Promise<void> | undefined;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly connection: ServerConnection,
    /** Set while the extension itself changes `blip2.model`, so no "Restart now" is offered for it. */
    private readonly expectModelChange: (expected: boolean) => void,
  ) {
    this.disposables.push(connection.onDidChangeModel((status) => this.modelChanged(status)));
  }

  private modelChanged(status: ModelStatus): void {
    if (status.state !== 'noModel' || this.offeredAutomatically || this.running) return;
    void this.openWalkthroughOnFirstRun();
    if (this.context.globalState.get<boolean>(DISMISSED_KEY)) return;
    this.offeredAutomatically = true;
    void this.offer(status, true);
  }

  /**
   * The first time after install that no model is set up, the walkthrough opens beside the offer, as VS Code
   * opens it for an install from the gallery (and not for one from a VSIX), unless walkthroughs on install are
   * turned off. With a model already set up there is nothing to walk through.
   */
  private async openWalkthroughOnFirstRun(): Promise<void> {
    if (this.context.globalState.get<boolean>(FIRST_RUN_KEY)) return;
    await this.context.globalState.update(FIRST_RUN_KEY, true);
    if (!vscode.workspace.getConfiguration('workbench').get<boolean>('welcomePage.walkthroughs.openOnInstall', true)) return;
    this.connection.output.info('Opening the walkthrough: no model is set up yet.');
    // Beside the document the user opened, not over it.
    await vscode.commands.executeCommand('workbench.action.openWalkthrough', `${EXTENSION_ID}#gettingStarted`, true);
  }

  /**
   * After a request failed: offers set-up when the reason is the missing model (by its error code, or by the
   * server's state when the code is absent), else shows the error.
   */
  async afterFailure(failure: RequestFailure, action: string): Promise<void> {
    if (failure.kind === 'cancelled') return;
    if (failure.kind === 'noModel') return this.offer(undefined, false, failure.message);
    if (failure.kind === 'serverFailed') return showServerFailure(failure.message);
    const status = await this.connection.refreshModelStatus();
    if (status?.state === 'noModel') return this.offer(status, false);
    const choice = await vscode.window.showErrorMessage(`BLIP-2 could not ${action}: ${failure.message}`, 'Show Output');
    if (choice === 'Show Output') this.connection.output.show(true);
  }

  /** The notification that offers a download (named, with its size) or a local folder. */
  async offer(status: ModelStatus | undefined, automatic: boolean, serverMessage?: string): Promise<void> {
    const settings = readSettings(settingGetter());
    const offer = downloadOffer({
      model: status?.model ?? settings.model,
      precision: settings.precision,
      device: status?.device ?? settings.device,
      offline: settings.offline,
      serverMessage: serverMessage ?? status?.message,
    });
    const buttons = [...(offer.downloadLabel ? [offer.downloadLabel] : []), CHOOSE_FOLDER, automatic ? "Don't Ask Again" : 'Open Settings'];
    const choice = await vscode.window.showInformationMessage(offer.message, ...buttons);
    if (choice === undefined) return;
    if (choice === offer.downloadLabel) await this.run(undefined);
    else if (choice === CHOOSE_FOLDER) await this.chooseFolder();
    else if (choice === 'Open Settings') await openModelSettings();
    else await this.context.globalState.update(DISMISSED_KEY, true);
  }

  /** "Set Up Model…": the same choices as the offer, as a quick pick, whatever the state. */
  async command(): Promise<void> {
    const settings = readSettings(settingGetter());
    const status = this.connection.state.kind === 'running' ? this.connection.state.model : undefined;
    const offer = downloadOffer({ model: settings.model, precision: settings.precision, device: status?.device ?? settings.device, offline: settings.offline });
    type Item = vscode.QuickPickItem & { action: () => Promise<void> };
    const items: Item[] = [];
    if (offer.downloadLabel) {
      items.push({ label: `$(cloud-download) ${offer.downloadLabel}`, detail: offer.message, action: () => this.run(undefined) });
    } else {
      items.push({ label: `$(sync) Set up ${settings.model}`, detail: offer.noDownloadReason, action: () => this.run(undefined) });
    }
    items.push(
      { label: `$(folder-opened) ${CHOOSE_FOLDER}`, detail: 'A Hugging Face BLIP-2 checkpoint folder, or a folder converted before.', action: () => this.chooseFolder() },
      { label: '$(settings-gear) Open Settings', detail: 'Model, precision, device and where converted models are kept.', action: openModelSettings },
    );
    const picked = await vscode.window.showQuickPick(items, { title: setUpPickerTitle(this.connection.state), matchOnDetail: true });
    await picked?.action();
  }

  async chooseFolder(): Promise<void> {
    const picked = await vscode.window.showOpenDialog({
      canSelectFiles: false,
      canSelectFolders: true,
      canSelectMany: false,
      openLabel: 'Use This Model Folder',
      title: 'BLIP-2: choose a folder with a BLIP-2 checkpoint or a converted model',
    });
    const folder = picked?.[0]?.fsPath;
    if (!folder) return;
    const configuration = vscode.workspace.getConfiguration(SECTION);
    // A workspace value would hide a user one; write where the value that counts lives.
    const inspected = configuration.inspect<string>('model');
    const target = inspected?.workspaceValue !== undefined ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global;
    this.expectModelChange(true);
    try {
      await configuration.update('model', folder, target);
    } finally {
      this.expectModelChange(false);
    }
    await this.run(folder);
  }

  /** Downloads, converts and loads `model` (the setting's when undefined); one set-up at a time. */
  run(model: string | undefined): Promise<void> {
    if (this.running) {
      void vscode.window.showInformationMessage('BLIP-2 is already setting up the model; its progress is in the notification.');
      return this.running;
    }
    this.running = this.runOnce(model).finally(() => (this.running = undefined));
    return this.running;
  }

  private async runOnce(model: string | undefined): Promise<void> {
    const client = await this.connection.ready('set up the model');
    if (!client) return;
    let status: ModelStatus;
    try {
      status = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: 'BLIP-2 model set-up', cancellable: true },
        async (progress, token) => {
          const workDoneToken = randomUUID();
          const subscription = reportWorkDone(client, workDoneToken, progress);
          try {
            return await client.sendRequest(SetUpModelRequest.type, { model, workDoneToken }, token);
          } finally {
            subscription.dispose();
          }
        },
      );
    } catch (error) {
      const failure = describeRequestError(error);
      if (failure.kind === 'cancelled') {
        if ((await vscode.window.showInformationMessage(SETUP_CANCELLED_MESSAGE, 'Resume')) === 'Resume') await this.run(model);
        return;
      }
      const choice = await vscode.window.showErrorMessage(`BLIP-2 model set-up failed: ${failure.message}`, 'Show Output', CHOOSE_FOLDER, 'Retry');
      if (choice === 'Show Output') this.connection.output.show(true);
      else if (choice === CHOOSE_FOLDER) await this.chooseFolder();
      else if (choice === 'Retry') await this.run(model);
      return;
    }
    if (status.state === 'error' || status.state === 'noModel') {
      void vscode.window.showErrorMessage(`BLIP-2 model set-up did not finish: ${status.message ?? status.state}`);
      return;
    }
    const facts = [status.precision, status.device].filter(Boolean).join(', ');
    void vscode.window.showInformationMessage(`BLIP-2 model ${status.model} is set up${facts ? ` (${facts})` : ''}.`);
  }

  dispose(): void {
    for (const disposable of this.disposables) disposable.dispose();
  }
}

async function openModelSettings(): Promise<void> {
  await vscode.commands.executeCommand('workbench.action.openSettings', `@ext:${EXTENSION_ID}`);
}
