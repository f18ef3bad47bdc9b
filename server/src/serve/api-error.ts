import type { ErrorBody } from '../protocol/openai-chat';

/**
 * A request that gets an error response: the HTTP status and vLLM's error body for it (vLLM's
 * create_error_response: `type` BadRequestError, NotFoundError, … and `code` the status).
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = 'BadRequestError',
    readonly param: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.status } };
  }
}

export function badRequest(message: string, param: string | null = null): ApiError {
  return new ApiError(400, message, 'BadRequestError', param);
}
