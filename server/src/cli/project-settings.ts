import * as path from 'node:path';
import { findProjectConfig, readProjectConfig } from '../features/workspace/project-config';
import { validateSettings, type Blip2Settings, type SettingsLayer } from '../protocol/settings';
import { UsageError } from './args';
import { displayPath } from './source-files';

/**
 * The settings of each file for `check` and `fix`: the defaults, under the nearest `.blip2.json`, under what the
 * command line says. A project file with a mistake is a usage error (exit 2): CI must not pass because a rule
 * was silently read as its default.
 */
export class ProjectSettings {
  private readonly byFolder = new Map<string, Blip2Settings>();

  constructor(
    private readonly cwd: string,
    /** The command line's own settings (model, generation), over the project file's. */
    private readonly commandLine: SettingsLayer = { value: undefined },
  ) {}

  forFile(file: string): Blip2Settings {
    return this.forFolder(path.dirname(file));
  }

  forFolder(dir: string): Blip2Settings {
    let settings = this.byFolder.get(dir);
    if (!settings) {
      settings = this.read(dir);
      this.byFolder.set(dir, settings);
    }
    return settings;
  }

  private read(dir: string): Blip2Settings {
    const file = findProjectConfig(dir);
    const project = file ? readProjectConfig(file, displayPath(file, this.cwd)) : undefined;
    const { settings, problems } = validateSettings([...(project ? [project] : []), this.commandLine]);
    const all = [...(project?.problems ?? []), ...problems];
    if (all.length > 0) {
      throw new UsageError(all[0], all.length > 1 ? `(${all.length - 1} more in the same settings.)` : 'Fix the setting and run again.');
    }
    return settings;
  }
}
