// Every command the extension registers. The palette's titles live in package.json; a test checks that the
// two lists agree and that the commands the server's hovers and code actions link to are among these.
import { ClientCommands } from '../../server/src/protocol/messages';

export const COMMANDS = {
  captionImage: ClientCommands.captionImage,
  askAboutImage: ClientCommands.askAboutImage,
  openImageChat: ClientCommands.openChat,
  generateMissingAltTextInFile: 'blip2.generateMissingAltTextInFile',
  generateMissingAltTextInWorkspace: 'blip2.generateMissingAltTextInWorkspace',
  setUpModel: ClientCommands.setUpModel,
  showModelStatus: 'blip2.showModelStatus',
  restartServer: 'blip2.restartServer',
  showOutput: 'blip2.showOutput',
  useAsAltText: ClientCommands.useAsAltText,
  chooseAltText: ClientCommands.chooseAltText,
  useLocalModel: ClientCommands.useLocalModel,
  setServerApiKey: 'blip2.setServerApiKey',
} as const;

export type CommandKey = keyof typeof COMMANDS;

/** Commands that take arguments only a link or a code action supplies: registered, not in the palette. */
export const LINK_ONLY_COMMANDS: readonly string[] = [COMMANDS.useAsAltText, COMMANDS.chooseAltText];
