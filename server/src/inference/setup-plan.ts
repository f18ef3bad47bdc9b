// The engine's set-up cost as the protocol's SetUpPlan: the sentence that states it, and the refusal set-up would give.
import { UserError } from '../engine/errors';
import { checkSpace, describeCost, type SetUpCost } from '../engine/store/setup-cost';
import type { SetUpPlan } from '../protocol/messages';

export function setUpPlan(cost: SetUpCost): SetUpPlan {
  let refusal: SetUpPlan['refusal'];
  try {
    checkSpace(cost);
  } catch (e) {
    if (!(e instanceof UserError)) throw e;
    refusal = { message: e.message, hint: e.hint };
  }
  return {
    model: cost.model,
    precision: cost.precision,
    kind: cost.kind,
    downloadBytes: cost.downloadBytes,
    peakDiskBytes: cost.peakDiskBytes,
    finalDiskBytes: cost.finalDiskBytes,
    storeDir: cost.storeDir,
    ...(cost.freeBytes !== undefined && { freeBytes: cost.freeBytes }),
    ...(cost.sourceDtype && cost.sourceDtype !== 'float32' && { sourceDtype: cost.sourceDtype }),
    message: describeCost(cost),
    ...(refusal && { refusal }),
  };
}
