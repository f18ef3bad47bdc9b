import * as fs from 'node:fs';
import { pathToFileURL } from 'node:url';
import { TextDocument } from 'vscode-languageserver-textdocument';
import { version } from '../../../package.json';
import { checkAlts } from '../features/alt-text/rules';
import { findImageElements } from '../features/images/find-images';
import type { AltRuleSettings } from '../protocol/settings';
import type { CliArgs } from './args';
import { ProjectSettings } from './project-settings';
import { failsCheck, formatReport, parseFormat, type CheckProblem } from './report';
import { findSourceFiles, type SourceFile } from './source-files';

/** `blip2 check`: the alt-text problems of every file, with the language server's rules and messages. */
export function runCheck(args: CliArgs, cwd = process.cwd()): number {
  const format = parseFormat(args.format);
  const settings = new ProjectSettings(cwd);
  const files = findSourceFiles(args.positionals, cwd);
  const problems: CheckProblem[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = fs.readFileSync(file.path, 'utf8');
    } catch (e) {
      process.stderr.write(`blip2: ${file.display} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); skipped.\n`);
      continue;
    }
    problems.push(...checkText(file, text, settings.forFile(file.path).altText));
  }
  process.stdout.write(formatReport(problems, format, { version, cwdUri: pathToFileURL(cwd).href }));
  if (format === 'text') process.stderr.write(summary(files.length, problems));
  return failsCheck(problems) ? 1 : 0;
}

/** The problems of one file's text, positioned as editors count (1-based lines, UTF-16 columns). */
export function checkText(file: SourceFile, text: string, settings: AltRuleSettings): CheckProblem[] {
  const document = TextDocument.create(pathToFileURL(file.path).href, file.languageId, 0, text);
  return checkAlts(findImageElements(text, file.languageId), settings).map((problem) => {
    const start = document.positionAt(problem.range.start);
    const end = document.positionAt(problem.range.end);
    return {
      file: file.display,
      line: start.line + 1,
      column: start.character + 1,
      endLine: end.line + 1,
      endColumn: end.character + 1,
      rule: problem.ruleId,
      severity: problem.severity,
      message: problem.message,
      image: problem.image.url,
    };
  });
}

function summary(files: number, problems: readonly CheckProblem[]): string {
  const count = (n: number, one: string) => `${n} ${one}${n === 1 ? '' : 's'}`;
  return `blip2: ${count(problems.length, 'problem')} in ${count(files, 'file')}.\n`;
}
