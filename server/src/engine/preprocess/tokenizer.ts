import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { readJson } from '../checkpoint/checkpoint';
import { readTokenizerJson } from '../checkpoint/files';
import { UserError } from '../errors';

/** The OPT byte-level BPE tokenizer of a model folder, loaded from its tokenizer.json with no network. */
export class TextTokenizer {
  private constructor(private readonly tok: Tokenizer) {}

  static load(dir: string): TextTokenizer {
    const file = path.join(dir, 'tokenizer.json');
    if (!fs.existsSync(file)) throw new UserError(`${dir} has no tokenizer.json.`, 'Download the complete model folder.');
    const configFile = path.join(dir, 'tokenizer_config.json');
    const config = fs.existsSync(configFile) ? (readJson(configFile) as object) : {};
    return new TextTokenizer(new Tokenizer(readTokenizerJson(file), config));
  }

  /** Token ids of a prompt, without BOS: the processor adds BOS itself, after the image tokens. */
  encode(text: string): number[] {
    return this.tok.encode(text, { add_special_tokens: false }).ids;
  }

  /** Decoded text of generated ids without special tokens, stripped as transformers' batch_decode(...).strip() callers do. */
  decode(ids: readonly number[]): string {
    return this.decodeRaw(ids).trim();
  }

  /** The same without the strip, for matching stop strings such as a newline. */
  decodeRaw(ids: readonly number[]): string {
    return this.tok.decode([...ids], { skip_special_tokens: true });
  }
}
