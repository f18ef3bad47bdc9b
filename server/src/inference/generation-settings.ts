import type { GenerationSettings } from '../engine/pipeline';
import type { Blip2Settings } from '../protocol/settings';

/**
 * The engine's generation settings for the user's `blip2.generation.*`: a caption keeps `alternatives` more beams
 * to offer (as many as beam search has), an answer keeps one.
 */
export function generationSettingsFor(g: Blip2Settings['generation'], kind: 'caption' | 'answer'): GenerationSettings {
  const beams = Math.max(1, g.numBeams);
  return {
    maxNewTokens: g.maxNewTokens,
    numBeams: beams,
    numReturnSequences: kind === 'caption' && beams > 1 ? Math.min(beams, g.alternatives + 1) : 1,
    repetitionPenalty: g.repetitionPenalty,
    noRepeatNgramSize: g.noRepeatNgramSize,
    ...(g.minNewTokens ? { minNewTokens: g.minNewTokens } : {}),
  };
}
