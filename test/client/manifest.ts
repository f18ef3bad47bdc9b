// package.json and the client sources, read the way VS Code and a reviewer would.
import { readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';

export const ROOT = path.resolve(__dirname, '../..');

export interface ConfigurationProperty {
  type: string;
  default: unknown;
  enum?: string[];
  enumDescriptions?: string[];
  markdownDescription?: string;
  description?: string;
  scope?: string;
  minimum?: number;
  maximum?: number;
  properties?: Record<string, ConfigurationProperty>;
  additionalProperties?: boolean;
}

export interface MenuItem {
  command: string;
  when?: string;
  group?: string;
}

export interface Manifest {
  name: string;
  publisher: string;
  main: string;
  icon: string;
  engines: { vscode: string };
  activationEvents: string[];
  categories: string[];
  capabilities: {
    untrustedWorkspaces: { supported: boolean | 'limited'; restrictedConfigurations?: string[]; description?: string };
    virtualWorkspaces: boolean | { supported: boolean };
  };
  contributes: {
    commands: { command: string; title: string; category?: string; icon?: string }[];
    menus: Record<string, MenuItem[]>;
    configuration: { title: string; properties: Record<string, ConfigurationProperty> }[] | { properties: Record<string, ConfigurationProperty> };
    walkthroughs: {
      id: string;
      steps: { id: string; description: string; media: { markdown?: string; image?: string }; completionEvents?: string[] }[];
    }[];
  };
}

export const manifest: Manifest = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));

/** Every `blip2.*` setting, whether the configuration is one object or a list of sections. */
export function configurationProperties(): Record<string, ConfigurationProperty> {
  const sections = Array.isArray(manifest.contributes.configuration) ? manifest.contributes.configuration : [manifest.contributes.configuration];
  const all: Record<string, ConfigurationProperty> = {};
  for (const section of sections) {
    for (const [key, value] of Object.entries(section.properties)) {
      if (key in all) throw new Error(`Setting ${key} is contributed twice`);
      all[key] = value;
    }
  }
  return all;
}

export function clientSource(file: string): string {
  return readFileSync(path.join(ROOT, 'client/src', file), 'utf8');
}

export function clientSourceFiles(): string[] {
  return readdirSync(path.join(ROOT, 'client/src')).filter((f) => f.endsWith('.ts'));
}
