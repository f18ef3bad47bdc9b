import type { GenerationSettings } from '../engine/pipeline';
import type { Blip2Settings } from '../protocol/settings';

/**
 * What a request asks of the model: a caption or an answer (`numBeams` beams, the best one kept), or a caption with
 * `alternatives` more to offer (beam search with at least that many more beams, all of them kept).
 */
export type GenerationKind = 'caption' | 'alternatives' | 'answer';

/** The engine's generation settings for the user's `blip2.generation.*` and a kind of request. */
export function generationSettingsFor(g: Blip2Settings['generation'], kind: GenerationKind): GenerationSettings {
  const keep = kind === 'alternatives' ? g.alternatives + 1 : 1;
  const beams = Math.max(1, g.numBeams, keep);
  return {
    maxNewTokens: g.maxNewTokens,
    numBeams: beams,
    numReturnSequences: keep,
    repetitionPenalty: g.repetitionPenalty,
    noRepeatNgramSize: g.noRepeatNgramSize,
    ...(g.minNewTokens ? { minNewTokens: g.minNewTokens } : {}),
  };
}
