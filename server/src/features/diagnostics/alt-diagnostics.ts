import type { Diagnostic } from 'vscode-languageserver-protocol';
import type { TextDocument } from 'vscode-languageserver-textdocument';
import type { AltRuleSettings } from '../../protocol/settings';
import { checkAlts, lspSeverity } from '../alt-text/rules';
import { findImageElements } from '../images/find-images';
import type { ImageElement } from '../images/image-reference';

/** The `source` of every diagnostic this server publishes; code actions recognise their diagnostics by it. */
export const DIAGNOSTIC_SOURCE = 'BLIP-2';

/**
 * Diagnostics for missing and unhelpful alt text: one per image at most per rule, code = the rule's id.
 * `elements` are the document's image elements when they were found already.
 */
export function altTextDiagnostics(
  document: TextDocument,
  settings: AltRuleSettings,
  elements: readonly ImageElement[] = findImageElements(document.getText(), document.languageId),
): Diagnostic[] {
  const problems = checkAlts(elements, settings);
  return problems.map((problem) => ({
    range: { start: document.positionAt(problem.range.start), end: document.positionAt(problem.range.end) },
    severity: lspSeverity(problem.severity),
    code: problem.ruleId,
    source: DIAGNOSTIC_SOURCE,
    message: problem.message,
  }));
}
