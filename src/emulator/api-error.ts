/**
 * The error the emulator's JSON APIs answer with (`__type` code, message, HTTP status), shared by the SSM
 * operations (`api.ts`) and the inventory look-ups (`inventory.ts`).
 */
import type { ApiErrorCode } from './faults.js';

/** HTTP status per error code (spec §2.4), plus codes the emulator itself uses for malformed requests. */
export const API_ERROR_STATUS: Readonly<
  Record<ApiErrorCode | EmulatorOnlyErrorCode | LookupErrorCode, number>
> = {
  TargetNotConnected: 400,
  InvalidDocument: 400,
  InvalidParameters: 400,
  DoesNotExistException: 400,
  AccessDeniedException: 400,
  ThrottlingException: 400,
  ValidationException: 400,
  InternalServerError: 500,
  UnknownOperationException: 400,
  SerializationException: 400,
  InvalidNextToken: 400,
  InvalidFilterKey: 400,
  InvalidInstanceInformationFilterValue: 400,
  ClusterNotFoundException: 400,
  ServiceNotFoundException: 400,
  InvalidParameterException: 400,
};

/** Error codes only produced for malformed requests (not in spec §2.4). */
export type EmulatorOnlyErrorCode = 'UnknownOperationException' | 'SerializationException';

/**
 * Error codes of the target look-ups: SSM DescribeInstanceInformation and ECS ListTasks/DescribeTasks
 * (SSM and ECS API references).
 */
export type LookupErrorCode =
  | 'InvalidNextToken'
  | 'InvalidFilterKey'
  | 'InvalidInstanceInformationFilterValue'
  | 'ClusterNotFoundException'
  | 'ServiceNotFoundException'
  | 'InvalidParameterException';

/** An API error: `__type` code and message. */
export class ApiError extends Error {
  constructor(
    /** The `__type` / `x-amzn-ErrorType` code. */
    readonly code: ApiErrorCode | EmulatorOnlyErrorCode | LookupErrorCode,
    message: string,
  ) {
    super(message);
  }

  /** HTTP status of this code (spec §2.4). */
  get status(): number {
    return API_ERROR_STATUS[this.code];
  }
}
