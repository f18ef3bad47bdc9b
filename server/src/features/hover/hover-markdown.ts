import type { Range } from 'vscode-languageserver-protocol';
import { ClientCommands, type GenerationResult } from '../../protocol/messages';

/** How tall the thumbnail is in editors that size hover images (VS Code reads `|height=` after the address). */
const THUMBNAIL_HEIGHT = 128;

export interface ThumbnailOptions {
  /** A `file:` or `http(s):` URI; no thumbnail without one. */
  uri?: string;
  /** Append VS Code's `|height=N` to the address; other editors would read it as part of the address. */
  sized: boolean;
}

export interface CaptionHoverContent {
  caption: GenerationResult;
  thumbnail: ThumbnailOptions;
  /** Where "Use as alt text" puts the caption: the document and the image element's range. */
  useAsAltText?: { uri: string; range: Range };
  /** The image as `blip2/ask` takes it. */
  askImage: string;
  /** Offer the VS Code extension's command links ("Use as alt text", "Ask a question…"). */
  links: boolean;
}

export function captionHoverMarkdown(content: CaptionHoverContent): string {
  const { caption } = content;
  const links: string[] = [];
  // An empty caption is never offered as alt text: `alt=""` would mark the image as decorative.
  if (content.links && content.useAsAltText && caption.text.trim()) {
    links.push(commandLink('Use as alt text', ClientCommands.useAsAltText, [content.useAsAltText.uri, content.useAsAltText.range, caption.text], "Put this caption in the image's alt text"));
  }
  if (content.links) links.push(commandLink('Ask a question…', ClientCommands.askAboutImage, [content.askImage], 'Ask BLIP-2 about this image'));
  // The thumbnail goes last: hovers have a height limit, and the caption and its actions must stay in view.
  const lines = [`**${escapeMarkdown(caption.text) || '(an empty caption)'}**`, provenance(caption), links.join(' · '), thumbnail(content.thumbnail)];
  return lines.filter((l) => l !== '').join('\n\n');
}

export function pendingHoverMarkdown(thumbnailOptions: ThumbnailOptions): string {
  return [thumbnail(thumbnailOptions), '*Captioning… hover again in a moment.*'].filter((l) => l !== '').join('\n\n');
}

/**
 * Why there is no caption, with the VS Code extension's way out as a link after it: "Set Up Model…" without a
 * model, "Use the local model" when the server failed.
 */
export function problemHoverMarkdown(reason: string, thumbnailOptions?: ThumbnailOptions, way?: 'setUp' | 'useLocalModel'): string {
  const link =
    way === 'setUp'
      ? ` ${commandLink('Set Up Model…', ClientCommands.setUpModel, [], 'Download the model or choose a local folder')}`
      : way === 'useLocalModel'
        ? ` ${commandLink('Use the local model', ClientCommands.useLocalModel, [], 'Clear blip2.server.url: captions are computed on this machine')}`
        : '';
  return [thumbnailOptions ? thumbnail(thumbnailOptions) : '', `**BLIP-2:** ${escapeMarkdown(reason)}${link}`].filter((l) => l !== '').join('\n\n');
}

function provenance(caption: GenerationResult): string {
  const when = caption.cached ? 'from the cache' : `${formatDuration(caption.durationMs)}`;
  const parts = ['BLIP-2', caption.model, caption.precision, caption.device, when].filter((p) => p !== '');
  return `*${parts.map(escapeMarkdown).join(' · ')}*`;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
}

function thumbnail(options: ThumbnailOptions): string {
  if (!options.uri || !/^(file|https?):/i.test(options.uri)) return '';
  // Parentheses and spaces would end a markdown link destination.
  const address = options.uri.replace(/[()\s]/g, (c) => encodeURIComponent(c));
  return `![thumbnail](${address}${options.sized ? `|height=${THUMBNAIL_HEIGHT}` : ''})`;
}

/** A `command:` link; the arguments travel as URI-encoded JSON, which is what VS Code decodes. */
function commandLink(label: string, command: string, args: unknown[], title: string): string {
  // encodeURIComponent leaves parentheses alone, and a `)` would end the link early.
  const query = encodeURIComponent(JSON.stringify(args)).replace(/[()]/g, (c) => (c === '(' ? '%28' : '%29'));
  return `[${label}](command:${command}?${query} "${title}")`;
}

/**
 * Model output and file names shown as inline text: the characters markdown could read as markup there (the
 * text never starts a line, so list and heading markers need no escape).
 */
export function escapeMarkdown(text: string): string {
  return text.replace(/\s+/g, ' ').trim().replace(/[\\`*_[\]<>|~#&]/g, '\\$&');
}
