/** Bytes as the messages people read give them: 512 bytes, 12.5 KB, 64 MB, 2.7 GB (powers of 1024). */
export function formatBytes(bytes: number): string {
  if (bytes >= 1024 * 1024 * 1024) return `${+(bytes / (1024 * 1024 * 1024)).toFixed(1)} GB`;
  if (bytes >= 1024 * 1024) return `${+(bytes / (1024 * 1024)).toFixed(1)} MB`;
  if (bytes >= 1024) return `${+(bytes / 1024).toFixed(1)} KB`;
  return `${bytes} bytes`;
}

/** The most characters of a value a message quotes: a 50 MB string in a settings file is not echoed back. */
const QUOTED_CHARS = 40;

/**
 * A value as a message quotes it: strings in quotes, anything else as JSON, cut to about 40 characters with the
 * length said. Walks only as deep as the characters allow, so a value nested 100,000 deep costs nothing.
 */
export function quoteValue(value: unknown): string {
  if (typeof value === 'string') {
    return value.length <= QUOTED_CHARS ? JSON.stringify(value) : `${JSON.stringify(value.slice(0, QUOTED_CHARS)).slice(0, -1)}…" (${value.length} characters)`;
  }
  let budget = QUOTED_CHARS;
  const out = (node: unknown): string => {
    if (budget <= 0) return '…';
    let text: string;
    if (Array.isArray(node)) {
      budget -= 2;
      const parts: string[] = [];
      for (const item of node) {
        if (budget <= 0) {
          parts.push('…');
          break;
        }
        parts.push(out(item));
      }
      text = `[${parts.join(',')}]`;
    } else if (typeof node === 'object' && node !== null) {
      budget -= 2;
      const parts: string[] = [];
      for (const [key, item] of Object.entries(node)) {
        if (budget <= 0) {
          parts.push('…');
          break;
        }
        const name = JSON.stringify(key.length > QUOTED_CHARS ? `${key.slice(0, QUOTED_CHARS)}…` : key);
        budget -= name.length + 1;
        parts.push(`${name}:${out(item)}`);
      }
      text = `{${parts.join(',')}}`;
    } else {
      text = typeof node === 'string' ? quoteValue(node) : (JSON.stringify(node) ?? String(node));
      budget -= text.length;
    }
    return text;
  };
  return out(value);
}
