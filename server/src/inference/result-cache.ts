import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { storeRoot } from '../engine/store/model-store';

/**
 * Where captions are cached when the client names no folder: beside the converted models, per user. The
 * language server outside VS Code and `blip2 fix` share it, so a caption computed by one is instant in the other.
 */
export function defaultCacheDir(modelStore: string): string {
  return path.join(storeRoot(modelStore || undefined), 'lsp-cache');
}

/** A stable key for a set of values (image hash, model, prompt, settings). */
export function cacheKey(...parts: unknown[]): string {
  return crypto.createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}

const MEMORY_TEXTS = 2000;
// Image encodings are 32 x 2560 floats (320 KiB) for the real model; 64 of them stay in memory.
const MEMORY_FEATURES = 64;

/**
 * Captions, answers and image encodings, in memory and (when a folder is given) on disk, so a caption computed
 * once is instant after a restart. Files are written to a temporary name and renamed, so a crash never leaves
 * a half-written entry; the disk part is pruned oldest-first to its size limit.
 */
export class ResultCache<T> {
  private readonly texts = new Map<string, T>();
  private readonly features = new Map<string, Float32Array>();
  private diskBytes = 0;
  private diskEntries = 0;

  constructor(
    readonly dir: string | undefined,
    private maxBytes: number,
  ) {
    if (dir) {
      fs.mkdirSync(path.join(dir, 'answers'), { recursive: true });
      fs.mkdirSync(path.join(dir, 'images'), { recursive: true });
      this.measure();
    }
  }

  setMaxBytes(bytes: number): void {
    this.maxBytes = bytes;
    this.prune();
  }

  async getAnswer(key: string): Promise<T | undefined> {
    const hit = this.texts.get(key);
    if (hit) return touch(this.texts, key, hit);
    const text = await this.read(path.join('answers', `${key}.json`));
    if (!text) return undefined;
    try {
      const value = JSON.parse(text.toString('utf8')) as T;
      remember(this.texts, key, value, MEMORY_TEXTS);
      return value;
    } catch {
      return undefined;
    }
  }

  async putAnswer(key: string, value: T): Promise<void> {
    remember(this.texts, key, value, MEMORY_TEXTS);
    await this.write(path.join('answers', `${key}.json`), Buffer.from(JSON.stringify(value)));
  }

  async getFeatures(key: string): Promise<Float32Array | undefined> {
    const hit = this.features.get(key);
    if (hit) return touch(this.features, key, hit).slice();
    const bytes = await this.read(path.join('images', `${key}.f32`));
    if (!bytes || bytes.length % 4 !== 0) return undefined;
    const value = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    remember(this.features, key, value, MEMORY_FEATURES);
    return value.slice();
  }

  async putFeatures(key: string, value: Float32Array): Promise<void> {
    remember(this.features, key, value.slice(), MEMORY_FEATURES);
    await this.write(path.join('images', `${key}.f32`), Buffer.from(value.buffer, value.byteOffset, value.byteLength));
  }

  stats(): { entries: number; bytes: number; dir?: string } {
    return this.dir ? { entries: this.diskEntries, bytes: this.diskBytes, dir: this.dir } : { entries: this.texts.size + this.features.size, bytes: 0 };
  }

  private async read(rel: string): Promise<Buffer | undefined> {
    if (!this.dir) return undefined;
    try {
      const file = path.join(this.dir, rel);
      const data = await fs.promises.readFile(file);
      // Reading marks the entry as recently used, so pruning removes what nobody asked for in a long time.
      const now = new Date();
      fs.promises.utimes(file, now, now).catch(() => undefined);
      return data;
    } catch {
      return undefined;
    }
  }

  private async write(rel: string, data: Buffer): Promise<void> {
    if (!this.dir) return;
    const file = path.join(this.dir, rel);
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      await fs.promises.writeFile(tmp, data);
      await fs.promises.rename(tmp, file);
      this.diskBytes += data.length;
      this.diskEntries++;
      if (this.diskBytes > this.maxBytes) this.prune();
    } catch {
      // A cache that cannot write (disk full, read-only) only loses speed; the result was still returned.
      fs.promises.rm(tmp, { force: true }).catch(() => undefined);
    }
  }

  private entries(): { file: string; size: number; mtime: number }[] {
    if (!this.dir) return [];
    const out: { file: string; size: number; mtime: number }[] = [];
    for (const sub of ['answers', 'images']) {
      const folder = path.join(this.dir, sub);
      for (const name of fs.readdirSync(folder)) {
        if (name.endsWith('.tmp')) continue;
        try {
          const st = fs.statSync(path.join(folder, name));
          out.push({ file: path.join(folder, name), size: st.size, mtime: st.mtimeMs });
        } catch {
          // Removed meanwhile by another server sharing the folder.
        }
      }
    }
    return out;
  }

  private measure(): void {
    const all = this.entries();
    this.diskEntries = all.length;
    this.diskBytes = all.reduce((s, e) => s + e.size, 0);
  }

  private prune(): void {
    if (!this.dir || this.diskBytes <= this.maxBytes) return;
    const all = this.entries().sort((a, b) => a.mtime - b.mtime);
    let bytes = all.reduce((s, e) => s + e.size, 0);
    // Down to 90% so pruning does not run on every write once the cache is full.
    for (const e of all) {
      if (bytes <= this.maxBytes * 0.9) break;
      fs.rmSync(e.file, { force: true });
      bytes -= e.size;
    }
    this.measure();
  }
}

function remember<V>(map: Map<string, V>, key: string, value: V, limit: number): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > limit) map.delete(map.keys().next().value as string);
}

function touch<V>(map: Map<string, V>, key: string, value: V): V {
  map.delete(key);
  map.set(key, value);
  return value;
}
