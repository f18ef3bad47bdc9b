import { SingleBar } from 'cli-progress';
import type { ModelProgress } from '../engine/open-model';
import { describeCost } from '../engine/store/setup-cost';


/**
 * Progress bars on stderr for downloads and conversion; silent when stderr is not a terminal,
 * so logs and --json pipelines stay clean.
 */
export class ProgressReporter {
  private bar?: SingleBar;
  private label = '';

  constructor(private readonly enabled = process.stderr.isTTY === true) {}

  update(p: ModelProgress): void {
    // What set-up will download (and the disk it needs) is said before it starts, on a terminal or not; a conversion
    // of a checkpoint already on this machine shows its progress bar only.
    if (p.stage === 'cost') {
      if (p.cost.downloadBytes > 0) process.stderr.write(`blip2: ${describeCost(p.cost)}\n`);
      return;
    }
    if (!this.enabled) return;
    if (p.stage === 'load') return this.stop();
    const label =
      p.stage === 'download'
        ? `Downloading ${p.file}`
        : p.stage === 'verify'
          ? 'Checking the model files'
          : p.phase === 'download'
            ? 'Downloading and converting'
            : 'Converting';
    const [value, total, unit] =
      p.stage === 'download'
        ? [p.bytes, p.total, 'bytes']
        : p.stage === 'verify'
          ? [p.done, p.total, 'bytes']
          : [p.done, p.total, 'bytes'];
    if (label !== this.label) {
      this.stop();
      this.label = label;
      this.bar = new SingleBar({
        stream: process.stderr,
        format: `${label.padEnd(34)} {bar} {percentage}% | {shown}`,
        hideCursor: true,
        clearOnComplete: false,
      });
      this.bar.start(total, 0, { shown: '' });
    }
    this.bar!.setTotal(total);
    this.bar!.update(value, { shown: unit === 'bytes' ? `${mb(value)} / ${mb(total)}` : `${value}/${total}` });
  }

  stop(): void {
    this.bar?.stop();
    this.bar = undefined;
    this.label = '';
  }
}

function mb(bytes: number): string {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`;
}
