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

  it('keeps a group-writable mode (0664) that the umask would have cut to 0644', () => {
    const file = path.join(dir, 'shared.md');
    fs.writeFileSync(file, '![](x.png)\n');
    fs.chmodSync(file, 0o664);
    const umask = process.umask(0o022);
    try {
      assert.deepEqual(replaceIfUnchanged(file, '![](x.png)\n', '![a kite](x.png)\n'), { written: true });
    } finally {
      process.umask(umask);
    }
    assert.equal(fs.statSync(file).mode & 0o7777, 0o664);
  });

  it('writes through a symbolic link to the file it points to, and the link stays a link', () => {
    fs.mkdirSync(path.join(dir, 'real'));
    const real = path.join(dir, 'real', 'doc.md');
    fs.writeFileSync(real, '![](x.png)\n');
    const link = path.join(dir, 'link.md');
    fs.symlinkSync(path.join('real', 'doc.md'), link);
    assert.deepEqual(replaceIfUnchanged(link, '![](x.png)\n', '![a kite](x.png)\n'), { written: true });
    assert.ok(fs.lstatSync(link).isSymbolicLink());
    assert.equal(fs.readlinkSync(link), path.join('real', 'doc.md'));
    assert.equal(fs.readFileSync(real, 'utf8'), '![a kite](x.png)\n');
    assert.deepEqual(fs.readdirSync(path.join(dir, 'real')), ['doc.md']);
  });

  it('keeps hard links: every name shows the new text, still one file', () => {
    const first = path.join(dir, 'first.md');
    const second = path.join(dir, 'second.md');
    fs.writeFileSync(first, '![a very long placeholder description of a picture](x.png)\n');
    fs.linkSync(first, second);
    assert.deepEqual(replaceIfUnchanged(second, '![a very long placeholder description of a picture](x.png)\n', '![a kite](x.png)\n'), { written: true });
    assert.equal(fs.readFileSync(first, 'utf8'), '![a kite](x.png)\n');
    assert.equal(fs.statSync(first).ino, fs.statSync(second).ino);
    assert.equal(fs.statSync(first).nlink, 2);
  });

  it('refuses a read-only file (0444), even where renaming over it would work', () => {
    const file = path.join(dir, 'locked.md');
    fs.writeFileSync(file, '![](x.png)\n');
    fs.chmodSync(file, 0o444);
    const outcome = replaceIfUnchanged(file, '![](x.png)\n', '![a kite](x.png)\n');
    assert.deepEqual(outcome, { written: false, reason: 'it is read-only (mode 0444); make it writable to let fix write it' });
    assert.equal(fs.readFileSync(file, 'utf8'), '![](x.png)\n');
    assert.equal(fs.statSync(file).mode & 0o777, 0o444);
  });

  it('keeps the owner and group where the system allows (run as root)', { skip: process.getuid?.() !== 0 && 'only root may give a file to another user' }, () => {
    const file = path.join(dir, 'theirs.md');
    fs.writeFileSync(file, '![](x.png)\n');
    fs.chownSync(file, 4321, 8765);
    assert.deepEqual(replaceIfUnchanged(file, '![](x.png)\n', '![a kite](x.png)\n'), { written: true });
    const stat = fs.statSync(file);
    assert.deepEqual([stat.uid, stat.gid], [4321, 8765]);
  });

  it('says why when the file is gone', () => {
    const outcome = replaceIfUnchanged(path.join(dir, 'gone.md'), 'x', 'y');
    assert.equal(outcome.written, false);
    assert.match(outcome.written ? '' : outcome.reason, /cannot be read any more \(ENOENT\)/);
  });
});
