import type * as Sarif from 'sarif';
import { ALT_RULES } from '../features/alt-text/rules';
import { ALT_RULE_IDS, quoteValue, type AltRuleId, type RuleSeverity } from '../protocol/settings';
import { UsageError } from './args';

/** One problem as `blip2 check` reports it; lines and columns are 1-based, columns in UTF-16 code units. */
export interface CheckProblem {
  /** Relative to the current folder, with `/`. */
  file: string;
  line: number;
  column: number;
  endLine: number;
  endColumn: number;
  rule: AltRuleId;
  severity: RuleSeverity;
  message: string;
  /** The image's destination as written. */
  image: string;
}

export const FORMATS = ['text', 'json', 'sarif', 'github'] as const;
export type Format = (typeof FORMATS)[number];

export function parseFormat(value: string | undefined): Format {
  if (value === undefined) return 'text';
  if ((FORMATS as readonly string[]).includes(value)) return value as Format;
  throw new UsageError(`--format must be one of ${FORMATS.join(', ')} (got ${quoteValue(value)}).`);
}

/** Exit 1 when anything at warning or error severity is found: information and hints are advice. */
export function failsCheck(problems: readonly CheckProblem[]): boolean {
  return problems.some((p) => p.severity === 'error' || p.severity === 'warning');
}

/** The report in `format`, ending with a newline (nothing at all for a clean text or github report). */
export function formatReport(problems: readonly CheckProblem[], format: Format, tool: { version: string; cwdUri: string }): string {
  switch (format) {
    case 'text':
      return problems.map((p) => `${p.file}:${p.line}:${p.column}  ${p.severity}  ${p.message}  ${p.rule}\n`).join('');
    case 'json':
      return `${JSON.stringify(problems, null, 2)}\n`;
    case 'sarif':
      return `${JSON.stringify(sarifLog(problems, tool), null, 2)}\n`;
    case 'github':
      return problems.map(githubAnnotation).join('');
  }
}

const SARIF_LEVEL: Record<RuleSeverity, Sarif.Result.level> = { error: 'error', warning: 'warning', information: 'note', hint: 'note' };

/** SARIF 2.1.0, as GitHub code scanning takes it: paths relative to the checkout, one result per problem. */
function sarifLog(problems: readonly CheckProblem[], tool: { version: string; cwdUri: string }): Sarif.Log {
  const rules: Sarif.ReportingDescriptor[] = ALT_RULE_IDS.map((id) => ({
    id,
    name: id.replace(/(^|-)([a-z])/g, (_m, _dash, c: string) => c.toUpperCase()),
    shortDescription: { text: ALT_RULES[id].description.replace(/`/g, '') },
    defaultConfiguration: { level: SARIF_LEVEL[ALT_RULES[id].defaultSeverity] },
  }));
  const results: Sarif.Result[] = problems.map((p) => ({
    ruleId: p.rule,
    ruleIndex: ALT_RULE_IDS.indexOf(p.rule),
    level: SARIF_LEVEL[p.severity],
    message: { text: p.message },
    locations: [
      {
        physicalLocation: {
          artifactLocation: { uri: encodeURI(p.file), uriBaseId: '%SRCROOT%' },
          region: { startLine: p.line, startColumn: p.column, endLine: p.endLine, endColumn: p.endColumn },
        },
      },
    ],
  }));
  return {
    $schema: 'https://json.schemastore.org/sarif-2.1.0.json',
    version: '2.1.0',
    runs: [
      {
        tool: { driver: { name: 'blip2', version: tool.version, rules } },
        originalUriBaseIds: { '%SRCROOT%': { uri: tool.cwdUri.endsWith('/') ? tool.cwdUri : `${tool.cwdUri}/` } },
        columnKind: 'utf16CodeUnits',
        results,
      },
    ],
  };
}

const ANNOTATION: Record<RuleSeverity, string> = { error: 'error', warning: 'warning', information: 'notice', hint: 'notice' };

/** A GitHub Actions workflow command: the problem shows on the pull request's diff at its line. */
function githubAnnotation(p: CheckProblem): string {
  const properties = [
    `file=${escapeProperty(p.file)}`,
    `line=${p.line}`,
    `col=${p.column}`,
    `endLine=${p.endLine}`,
    `endColumn=${p.endColumn}`,
    `title=${escapeProperty(`BLIP-2 ${p.rule}`)}`,
  ];
  return `::${ANNOTATION[p.severity]} ${properties.join(',')}::${escapeData(p.message)}\n`;
}

/** What the runner's parser unescapes in a message (actions/toolkit's command.ts). */
function escapeData(text: string): string {
  return text.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}

function escapeProperty(text: string): string {
  return escapeData(text).replace(/:/g, '%3A').replace(/,/g, '%2C');
}
