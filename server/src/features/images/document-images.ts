import { TextDocument } from 'vscode-languageserver-textdocument';
import { imageSyntaxOf } from './find-images';
import type { FindImageElements } from './image-parser';
import type { ImageElement } from './image-reference';

/** A document's image elements at one version, with the document as it was then (offsets convert against it). */
export interface ParsedDocument {
  document: TextDocument;
  elements: ImageElement[];
  /** Why the document counts as having no images without having been searched to the end (too large, …). */
  skipped?: string;
}

interface Entry {
  version: number;
  parsed: Promise<ParsedDocument>;
}

/**
 * The image elements of each open document, found once per version and shared by diagnostics, hovers, code actions
 * and quick fixes, so that no request parses a document: the work a request does is in the number of images, not
 * the size of the document. A version that was superseded before its parse started is never parsed; whoever waited
 * for it gets the newer version's images.
 */
export class DocumentImages {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly find: FindImageElements) {}

  /** `document` is the live one the server keeps (always at its latest version). */
  of(document: TextDocument): Promise<ParsedDocument> {
    const { uri, version, languageId } = document;
    const known = this.entries.get(uri);
    if (known && known.version === version) return known.parsed;
    const text = document.getText();
    const snapshot = TextDocument.create(uri, languageId, version, text);
    const entry: Entry = { version, parsed: Promise.resolve({ document: snapshot, elements: [] }) };
    // Registered before the parse is queued, since the parser asks `wanted` as it starts.
    this.entries.set(uri, entry);
    const wanted = () => this.entries.get(uri) === entry;
    const found = imageSyntaxOf(languageId) === 'other' ? Promise.resolve({ elements: [] }) : this.find(text, languageId, wanted);
    entry.parsed = found.then((result) => {
      if (result) return { document: snapshot, ...result };
      // Superseded by a newer version before the parse began: its images, unless the document was closed.
      const newer = this.entries.get(uri);
      return newer && newer !== entry ? newer.parsed : { document: snapshot, elements: [] };
    });
    return entry.parsed;
  }

  forget(uri: string): void {
    this.entries.delete(uri);
  }
}
