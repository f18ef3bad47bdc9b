import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { clientSource } from './manifest';

/** The modules the unit tests load: none may need VS Code, or the tests could not run outside it. */
const PURE = ['config.ts', 'status-text.ts', 'setup-text.ts', 'chat-html.ts', 'chat-messages.ts', 'command-ids.ts', 'request-errors.ts', 'insert-text.ts'];

describe('modules tested without VS Code', () => {
  for (const file of PURE) {
    it(`${file} imports neither vscode nor the language client`, () => {
      const source = clientSource(file);
      assert.doesNotMatch(source, /from ['"]vscode['"]/);
      assert.doesNotMatch(source, /from ['"]vscode-languageclient/);
      const imports = [...source.matchAll(/from ['"](\.[^'"]+)['"]/g)].map((m) => m[1]);
      for (const local of imports.filter((i) => i.startsWith('./'))) {
        assert.ok(PURE.includes(`${local.slice(2)}.ts`), `${file} imports ${local}, which is not in the pure list`);
      }
    });
  }
});
