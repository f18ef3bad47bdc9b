/**
 * VS Code's `files.exclude` globs as a test on workspace-relative paths ('/'-separated). Supports what those
 * settings use: `**`, `*`, `?`, `{a,b}` and `[abc]`; a pattern without a slash matches at any depth, as VS Code's
 * defaults (`**\/.git`) and most users' entries (`**\/dist`) assume. Patterns set to anything but `true` are off
 * (`{ "when": … }` clauses depend on sibling files, which a walk this cheap does not check).
 */
export function compileExcludes(excludes: Record<string, unknown>): (relativePath: string) => boolean {
  const patterns = Object.entries(excludes)
    .filter(([, on]) => on === true)
    .map(([glob]) => globToRegExp(glob));
  if (patterns.length === 0) return () => false;
  return (relativePath) => patterns.some((pattern) => pattern.test(relativePath));
}

export function globToRegExp(glob: string): RegExp {
  let pattern = glob.trim().replace(/\\/g, '/').replace(/^\.\//, '').replace(/\/+$/, '');
  const anchored = pattern.includes('/') && !pattern.startsWith('**/');
  if (!anchored && !pattern.startsWith('**/')) pattern = `**/${pattern}`;
  let out = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '*' && pattern[i + 1] === '*') {
      const slash = pattern[i + 2] === '/';
      out += slash ? '(?:.*/)?' : '.*';
      i += slash ? 2 : 1;
    } else if (c === '*') {
      out += '[^/]*';
    } else if (c === '?') {
      out += '[^/]';
    } else if (c === '{') {
      const close = pattern.indexOf('}', i);
      if (close < 0) {
        out += '\\{';
        continue;
      }
      out += `(?:${pattern.slice(i + 1, close).split(',').map(escapeRegExp).join('|')})`;
      i = close;
    } else if (c === '[') {
      const close = pattern.indexOf(']', i);
      if (close < 0) {
        out += '\\[';
        continue;
      }
      out += `[${pattern.slice(i + 1, close).replace(/^!/, '^').replace(/\\/g, '\\\\')}]`;
      i = close;
    } else {
      out += escapeRegExp(c);
    }
  }
  // A folder pattern excludes everything under it too.
  return new RegExp(`^${out}(?:/.*)?$`);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}
