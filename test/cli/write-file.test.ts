import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { replaceIfUnchanged } from '../../server/src/cli/write-file';

describe('replaceIfUnchanged', () => {
  let dir: string;
  before(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-write-'))));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('replaces the file through a renamed temporary file, keeping its mode and leaving nothing beside it', () => {
    const file = path.join(dir, 'a.md');
    fs.writeFileSync(file, '![](x.png)\n', { mode: 0o640 });
    const inode = fs.statSync(file).ino;
    assert.deepEqual(replaceIfUnchanged(file, '![](x.png)\n', '![a kite](x.png)\n'), { written: true });
    assert.equal(fs.readFileSync(file, 'utf8'), '![a kite](x.png)\n');
    assert.equal(fs.statSync(file).mode & 0o777, 0o640);
    assert.notEqual(fs.statSync(file).ino, inode, 'a new file took the old one\'s name');
    assert.deepEqual(fs.readdirSync(dir), ['a.md']);
  });

  it('leaves a file that changed since it was read as it is', () => {
    const file = path.join(dir, 'b.md');
    fs.writeFileSync(file, '![](x.png) and a line someone typed\n');
    const outcome = replaceIfUnchanged(file, '![](x.png)\n', '![a kite](x.png)\n');
    assert.equal(outcome.written, false);
    assert.match(outcome.written ? '' : outcome.reason, /changed since it was read/);
    assert.equal(fs.readFileSync(file, 'utf8'), '![](x.png) and a line someone typed\n');
    assert.deepEqual(fs.readdirSync(dir).sort(), ['a.md', 'b.md']);
  });

  it('says why when the file is gone', () => {
    const outcome = replaceIfUnchanged(path.join(dir, 'gone.md'), 'x', 'y');
    assert.equal(outcome.written, false);
    assert.match(outcome.written ? '' : outcome.reason, /cannot be read any more \(ENOENT\)/);
  });
});
