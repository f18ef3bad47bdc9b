import type { ChangeAnnotation, TextEdit, WorkspaceEdit } from 'vscode-languageserver-protocol';

/** What the client's `workspace.workspaceEdit` capabilities allow. */
export interface EditSupport {
  documentChanges: boolean;
  changeAnnotations: boolean;
}

export interface FileEdits {
  uri: string;
  /** The version the edits were computed against; null for a file that is not open in the editor. */
  version: number | null;
  edits: TextEdit[];
}

export const ALT_TEXT_ANNOTATION_ID = 'blip2.altText';

/**
 * One workspace edit for all files. With change annotations that need confirmation, VS Code shows its refactor
 * preview, where the user reviews and unticks edits before applying them as one undoable step; versioned
 * document changes make the editor refuse the edit if a document changed after it was computed.
 */
export function buildWorkspaceEdit(files: readonly FileEdits[], support: EditSupport, annotation?: ChangeAnnotation): WorkspaceEdit {
  const nonEmpty = files.filter((f) => f.edits.length > 0);
  if (!support.documentChanges) {
    return { changes: Object.fromEntries(nonEmpty.map((f) => [f.uri, f.edits])) };
  }
  const annotate = support.changeAnnotations && annotation !== undefined;
  return {
    documentChanges: nonEmpty.map((f) => ({
      textDocument: { uri: f.uri, version: f.version },
      edits: annotate ? f.edits.map((e) => ({ ...e, annotationId: ALT_TEXT_ANNOTATION_ID })) : f.edits,
    })),
    ...(annotate ? { changeAnnotations: { [ALT_TEXT_ANNOTATION_ID]: annotation } } : {}),
  };
}
