/**
 * What the server accepts as the params of each message it handles: every `blip2/*` request as declared in
 * messages.ts (a compile-time check below keeps each schema and its type the same), and the parts of the LSP
 * messages the server reads. A message that does not match is answered with -32602 and one sentence naming the
 * field (lsp/protocol-guard.ts), never a TypeError from deep inside a handler.
 */
import * as z from 'zod';
import {
  AskRequest,
  CaptionRequest,
  ServerCommands,
  SetUpModelRequest,
  SetUpPlanRequest,
  type AltTextCommandArgs,
  type AskParams,
  type CaptionParams,
  type ChatTurn,
  type SetUpModelParams,
} from './messages';

const progressToken = z.union([z.number(), z.string()]);
const count = z.number().int().nonnegative();
const position = z.object({ line: count, character: count });
const range = z.object({ start: position, end: position });
const textDocument = z.object({ uri: z.string() });

const chatTurn = z.object({ question: z.string(), answer: z.string() });
const captionParams = z.object({ image: z.string(), prompt: z.string().optional(), alternatives: z.boolean().optional(), workDoneToken: progressToken.optional() });
const askParams = z.object({
  image: z.string(),
  question: z.string(),
  history: z.array(chatTurn).optional(),
  workDoneToken: progressToken.optional(),
  partialResultToken: progressToken.optional(),
});
const setUpModelParams = z.object({ model: z.string().optional(), costShown: z.boolean().optional(), workDoneToken: progressToken.optional() });
const altTextCommandArgs = z.object({ uri: z.string().optional(), apply: z.boolean().optional() });

/** Fails to compile when a schema and the type messages.ts declares for the same params drift apart. */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const declared: [
  Same<z.infer<typeof chatTurn>, ChatTurn>,
  Same<z.infer<typeof captionParams>, CaptionParams>,
  Same<z.infer<typeof askParams>, AskParams>,
  Same<z.infer<typeof setUpModelParams>, SetUpModelParams>,
  Same<z.infer<typeof altTextCommandArgs>, AltTextCommandArgs>,
] = [true, true, true, true, true];
void declared;

/** What a code action carries to `codeAction/resolve` (features/code-actions: AltActionData). */
const altActionData = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('blip2.altFix'),
    uri: z.string(),
    version: z.number().int(),
    anchor: z.object({
      destination: z.string(),
      occurrence: count,
      count,
      kind: z.enum(['markdown-inline', 'markdown-reference', 'html', 'jsx']),
      range: z.object({ start: count, end: count }),
      alt: z.string().optional(),
      before: z.string(),
      after: z.string(),
    }),
  }),
  z.object({ kind: z.literal('blip2.altFile'), uri: z.string(), version: z.number().int() }),
]);
const OUR_ACTIONS = new Set(['blip2.altFix', 'blip2.altFile']);

/** The first argument of each server command (`generateMissingAltText` may have none: the whole workspace). */
const COMMAND_ARGS: Readonly<Record<string, z.ZodType>> = {
  [ServerCommands.generateMissingAltText]: altTextCommandArgs,
  [ServerCommands.fixAltText]: altActionData,
};

/** Requests, by method. Those with no params (`blip2/modelStatus`, `shutdown`) take whatever comes. */
export const REQUEST_PARAMS: Readonly<Record<string, z.ZodType>> = {
  initialize: z.object({
    processId: z.union([z.number().int(), z.null()]).optional(),
    capabilities: z.looseObject({}),
    initializationOptions: z.unknown().optional(),
  }),
  'textDocument/hover': z.object({ textDocument, position }),
  'textDocument/codeAction': z.object({
    textDocument,
    range,
    context: z.object({ diagnostics: z.array(z.looseObject({ range })), only: z.array(z.string()).optional() }),
  }),
  'codeAction/resolve': z.looseObject({ title: z.string(), data: z.unknown().optional() }).superRefine((action, ctx) => {
    const data = action.data as { kind?: unknown } | undefined;
    if (typeof data?.kind !== 'string' || !OUR_ACTIONS.has(data.kind)) return;
    for (const issue of altActionData.safeParse(data, { reportInput: true }).error?.issues ?? []) {
      ctx.addIssue({ ...issue, path: ['data', ...issue.path] } as z.core.$ZodRawIssue);
    }
  }),
  'workspace/executeCommand': z.object({ command: z.string(), arguments: z.array(z.unknown()).optional() }).superRefine((params, ctx) => {
    const schema = COMMAND_ARGS[params.command];
    const args = params.arguments?.[0];
    if (!schema || (args === undefined && params.command === ServerCommands.generateMissingAltText)) return;
    for (const issue of schema.safeParse(args, { reportInput: true }).error?.issues ?? []) {
      ctx.addIssue({ ...issue, path: ['arguments', 0, ...issue.path] } as z.core.$ZodRawIssue);
    }
  }),
  [CaptionRequest.method]: captionParams,
  [AskRequest.method]: askParams,
  [SetUpModelRequest.method]: setUpModelParams,
  [SetUpPlanRequest.method]: setUpModelParams,
};

/** Notifications, by method: one that does not match is dropped (there is nobody to answer), with a log line. */
export const NOTIFICATION_PARAMS: Readonly<Record<string, z.ZodType>> = {
  'textDocument/didOpen': z.object({ textDocument: z.object({ uri: z.string(), languageId: z.string(), version: z.number().int(), text: z.string() }) }),
  'textDocument/didChange': z.object({
    textDocument: z.object({ uri: z.string(), version: z.number().int() }),
    contentChanges: z.array(z.union([z.object({ range, text: z.string() }), z.object({ text: z.string() })])),
  }),
  'textDocument/didClose': z.object({ textDocument }),
  'window/workDoneProgress/cancel': z.object({ token: progressToken }),
  'workspace/didChangeWorkspaceFolders': z.object({
    event: z.object({ added: z.array(z.object({ uri: z.string(), name: z.string() })), removed: z.array(z.object({ uri: z.string(), name: z.string() })) }),
  }),
};

/** Why `params` do not fit `method`'s schema, as one sentence; undefined when they fit or nothing is declared. */
export function paramsProblem(schemas: Readonly<Record<string, z.ZodType>>, method: string, params: unknown): string | undefined {
  const schema = Object.hasOwn(schemas, method) ? schemas[method] : undefined;
  const result = schema?.safeParse(params, { reportInput: true });
  if (!result || result.success) return undefined;
  const issue = result.error.issues[0];
  const where = issue.path.length ? `"${issue.path.map(String).join('.')}"` : 'the params';
  return `Invalid params for ${method}: ${explain(where, issue)}.`;
}

function explain(where: string, issue: z.core.$ZodIssue): string {
  const input = (issue as { input?: unknown }).input;
  switch (issue.code) {
    case 'invalid_type':
      return input === undefined ? `${where} is missing` : `${where} must be ${article(issue.expected)}, not ${shown(input)}`;
    case 'too_small':
      return `${where} must be at least ${String(issue.minimum)}, not ${shown(input)}`;
    case 'invalid_value':
      return `${where} must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}, not ${shown(input)}`;
    case 'invalid_union':
      return `${where} has none of the accepted shapes (${shown(input)})`;
    default:
      return `${where}: ${issue.message.replace(/\.$/, '')}`;
  }
}

function article(type: string): string {
  return `${/^[aeio]/.test(type) ? 'an' : 'a'} ${type === 'int' ? 'whole number' : type}`;
}

function shown(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}
